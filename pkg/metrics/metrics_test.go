package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches the relay's metrics over HTTP and parses them.
func scrape(t *testing.T, m *Relay) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

// find returns the sample of name with exactly the given labels, or nil.
func find(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		ok := true
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				ok = false
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

func TestRelayExposition(t *testing.T) {
	refreshed := 0
	active := []ActiveCalls{{Trunk: "carrier", Mode: "passthrough", N: 2}, {Trunk: "pbx", Mode: "pending", N: 1}}
	var m *Relay
	m = NewRelay(Options{
		Trunks:  []string{"carrier", "pbx"},
		Refresh: func() { refreshed++; m.WebRTC.PacketsIn.Add(50) },
		Active:  func() []ActiveCalls { return active },
	})
	m.CallSetup.WithLabelValues("carrier", "outbound").Observe(0.3)
	m.MOS.WithLabelValues("carrier", LegSIP).Observe(4.3)
	m.SIPRequests.WithLabelValues("INVITE").Inc()

	fams := scrape(t, m)
	if refreshed != 1 {
		t.Errorf("refresh ran %d times for one scrape", refreshed)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes",
		"process_cpu_seconds_total", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if s := find(fams, "mediarelay_packets_total", map[string]string{"leg": "webrtc", "dir": "in"}); s.GetCounter().GetValue() != 50 {
		t.Errorf("packets{webrtc,in} = %v, want the 50 the refresh added", s)
	}
	if s := find(fams, "mediarelay_calls_active", nil); s.GetGauge().GetValue() != 3 {
		t.Errorf("calls_active = %v, want 3", s)
	}
	if s := find(fams, "mediarelay_trunk_calls_active", map[string]string{"trunk": "carrier", "mode": "passthrough"}); s.GetGauge().GetValue() != 2 {
		t.Errorf("trunk_calls_active{carrier,passthrough} = %v", s)
	}
	for _, trunk := range []string{"carrier", "pbx"} {
		for _, cause := range EndCauses {
			if find(fams, "mediarelay_calls_total", map[string]string{"cause": cause, "trunk": trunk}) == nil {
				t.Errorf("calls_total{%s,%s} not initialised", cause, trunk)
			}
		}
		if find(fams, "mediarelay_transcoded_calls_total", map[string]string{"mode": "transcode", "trunk": trunk}) == nil {
			t.Errorf("transcoded_calls_total{transcode,%s} not initialised", trunk)
		}
	}
	h := find(fams, "mediarelay_call_setup_seconds", map[string]string{"trunk": "carrier", "direction": "outbound"}).GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 0.3 || len(h.GetBucket()) == 0 {
		t.Errorf("setup histogram = %v", h)
	}
	if fams["mediarelay_call_mos"].GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("mos is %v", fams["mediarelay_call_mos"].GetType())
	}

	// Each scrape refreshes again; counters only grow.
	fams = scrape(t, m)
	if s := find(fams, "mediarelay_packets_total", map[string]string{"leg": "webrtc", "dir": "in"}); s.GetCounter().GetValue() != 100 || refreshed != 2 {
		t.Errorf("second scrape: packets = %v, refreshed %d times", s, refreshed)
	}

	// With no call up the total is still there, at 0.
	active = nil
	if s := find(scrape(t, m), "mediarelay_calls_active", nil); s == nil || s.GetGauge().GetValue() != 0 {
		t.Errorf("idle calls_active = %v", s)
	}
}

func TestRegistrationErrorsPanic(t *testing.T) {
	for name, f := range map[string]func(m *Relay){
		"empty name":     func(m *Relay) { m.NewCounterVec("", "h") },
		"reserved label": func(m *Relay) { m.NewGaugeVec("ok_total", "h", "__x") },
		"duplicate":      func(m *Relay) { m.NewCounterVec("mediarelay_calls_total", "h", "cause", "trunk") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("did not panic")
				}
			}()
			f(NewRelay(Options{}))
		})
	}
}

// TestCountersDoNotAllocate: what the relay adds at scrape and call end
// is an atomic update of a resolved child.
func TestCountersDoNotAllocate(t *testing.T) {
	m := NewRelay(Options{})
	c := m.PacketsDropped.WithLabelValues("late")
	if n := testing.AllocsPerRun(1000, func() { m.SIP.PacketsIn.Add(3); c.Inc() }); n != 0 {
		t.Errorf("%v allocations per update", n)
	}
}

func TestDashboard(t *testing.T) {
	names, err := DashboardMetrics()
	if err != nil {
		t.Fatal(err)
	}
	// The names themselves are checked against a live /metrics after a
	// call in signaling (TestMetricsCall); here only that they were found.
	for _, want := range []string{"mediarelay_call_setup_seconds_bucket", "process_cpu_seconds_total", "mediarelay_packets_dropped_total"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("dashboard does not query %s: %v", want, names)
		}
	}
}
