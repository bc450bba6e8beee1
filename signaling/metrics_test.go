package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// parseMetrics parses a scrape in the text exposition format.
func parseMetrics(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// hasLabels says whether m carries every label of want with its value.
func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// sampleValue is a counter's or gauge's value, or a histogram's count.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// sumCounter adds up the children of vec whose label has value.
func sumCounter(t testing.TB, vec *prometheus.CounterVec, label, value string) uint64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { vec.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if hasLabels(&pb, map[string]string{label: value}) {
			sum += pb.GetCounter().GetValue()
		}
	}
	return uint64(sum)
}

// scrapeFamilies fetches /metrics over HTTP and parses it.
func scrapeFamilies(t *testing.T, r *Relay) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := parseMetrics(metricsText(t, r))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// familyCount is the value (histograms: the count) of the sample of name
// whose labels include labels; -1 if there is none.
func familyCount(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, labels) {
			return sampleValue(m)
		}
	}
	return -1
}

// TestMetricsCall places a real call and reads /metrics over HTTP while it
// is up and after it ends: live packet counters, active calls by trunk and
// mode, and the set-up, first media, duration and quality histograms.
func TestMetricsCall(t *testing.T) {
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")

	idle := scrapeFamilies(t, r)
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if idle[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if v := familyCount(idle, "mediarelay_calls_active", nil); v != 0 {
		t.Errorf("idle calls_active = %v", v)
	}
	if v := familyCount(idle, "mediarelay_calls_total", map[string]string{"cause": "normal", "trunk": "carrier"}); v != 0 {
		t.Errorf("calls_total{normal,carrier} before any call = %v, want a 0 sample", v)
	}

	p.call(r, "1000")
	p.sendFrames(50, 160)
	p.collect(500 * time.Millisecond)
	var live map[string]*dto.MetricFamily
	waitFor(t, "first media observed", 5*time.Second, func() bool {
		live = scrapeFamilies(t, r)
		return familyCount(live, "mediarelay_call_first_media_seconds", map[string]string{"trunk": "carrier", "direction": "outbound"}) == 1
	})
	outbound := map[string]string{"trunk": "carrier", "direction": "outbound"}
	if v := familyCount(live, "mediarelay_call_setup_seconds", outbound); v != 1 {
		t.Errorf("setup histogram count = %v, want 1", v)
	}
	if v := familyCount(live, "mediarelay_calls_active", nil); v != 1 {
		t.Errorf("calls_active = %v", v)
	}
	if v := familyCount(live, "mediarelay_trunk_calls_active", map[string]string{"trunk": "carrier", "mode": mediaplan.ModePassthrough}); v != 1 {
		t.Errorf("trunk_calls_active{carrier,passthrough} = %v", v)
	}
	if v := familyCount(live, "mediarelay_packets_total", map[string]string{"leg": "webrtc", "dir": "in"}); v < 45 {
		t.Errorf("live packets{webrtc,in} = %v, want the ~50 sent", v)
	}
	if v := familyCount(live, "mediarelay_transcoded_calls_total", map[string]string{"mode": mediaplan.ModePassthrough, "trunk": "carrier"}); v != 1 {
		t.Errorf("transcoded_calls_total{passthrough,carrier} = %v", v)
	}
	// The media loops: the call's sockets are on one, which has served
	// rounds (the loops are the process's, so other relays' count too).
	var sockets, busy float64
	for _, m := range live["mediarelay_media_loop_sockets"].GetMetric() {
		sockets += sampleValue(m)
	}
	for _, m := range live["mediarelay_media_loop_busy_seconds_total"].GetMetric() {
		busy += sampleValue(m)
	}
	if sockets < 2 || busy <= 0 {
		t.Errorf("media loops: %v sockets, %v s busy; want the call's RTP and RTCP sockets and some rounds", sockets, busy)
	}

	p.hangup()
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
	end := scrapeFamilies(t, r)
	if v := familyCount(end, "mediarelay_calls_total", map[string]string{"cause": cdr.CauseNormalBrowser, "trunk": "carrier"}); v != 1 {
		t.Errorf("calls_total{normal,carrier} = %v", v)
	}
	if v := familyCount(end, "mediarelay_call_duration_seconds", outbound); v != 1 {
		t.Errorf("duration histogram count = %v", v)
	}
	for _, leg := range []string{"webrtc", "sip"} {
		l := map[string]string{"trunk": "carrier", "leg": leg}
		for _, name := range []string{"mediarelay_call_mos", "mediarelay_call_loss_ratio", "mediarelay_call_jitter_seconds"} {
			if v := familyCount(end, name, l); v != 1 {
				t.Errorf("%s{carrier,%s} count = %v", name, leg, v)
			}
		}
	}
	if v := familyCount(end, "mediarelay_calls_active", nil); v != 0 {
		t.Errorf("calls_active after the call = %v", v)
	}
	if v := familyCount(end, "mediarelay_trunk_calls_active", nil); v != -1 {
		t.Errorf("trunk_calls_active still has a sample after the call: %v", v)
	}
	checkDashboard(t, live, end)
}

// checkDashboard: every metric the Grafana dashboard queries is in one of
// the scrapes.
func checkDashboard(t *testing.T, scrapes ...map[string]*dto.MetricFamily) {
	t.Helper()
	names, err := metrics.DashboardMetrics()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 20 {
		t.Fatalf("the dashboard queries only %v", names)
	}
	for _, name := range names {
		found := false
		for _, fams := range scrapes {
			if f := fams[name]; f != nil && len(f.GetMetric()) > 0 {
				found = true
			}
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base, ok := strings.CutSuffix(name, suffix)
				if f := fams[base]; ok && f != nil && f.GetType() == dto.MetricType_HISTOGRAM && len(f.GetMetric()) > 0 {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("the dashboard queries %s, which /metrics does not have", name)
		}
	}
}

// TestMetricsLegFailureCauses: a WebRTC leg's failure is counted as ICE or
// DTLS by its cause; a closed port is neither.
func TestMetricsLegFailureCauses(t *testing.T) {
	r, err := New(config.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{media.FailICETimeout, media.FailICEConsent, media.FailDTLS, media.FailClosed, ""} {
		r.m.CountLegFailure(c)
	}
	if v := testutil.ToFloat64(r.m.ICEFailures.WithLabelValues(media.FailICETimeout)); v != 1 {
		t.Errorf("ice_failures{ice_timeout} = %v", v)
	}
	if v := testutil.ToFloat64(r.m.DTLSFailures.WithLabelValues("webrtc", media.FailDTLS)); v != 1 {
		t.Errorf("dtls failures{webrtc,dtls_handshake} = %v", v)
	}
	if v := testutil.ToFloat64(r.m.DTLSFailures.WithLabelValues("webrtc", media.FailSRTPKeys)); v != 0 {
		t.Errorf("dtls failures{webrtc,srtp_keys} = %v", v)
	}
}

// TestRecordLegs: a call's and a join's CDR get their per-leg fields and
// MOS from the same place, the MOS for the SIP codec and the worse leg.
func TestRecordLegs(t *testing.T) {
	sip := media.LegStats{PacketsIn: 90, PacketsOut: 100, Lost: 10, Jitter: 4}
	web := media.LegStats{PacketsIn: 100, PacketsOut: 95, Jitter: 12}
	rec := cdr.Record{SIPCodec: "PCMU"}
	recordLegs(&rec, sip, web, "udp4", "tcp6")
	if rec.SIPPacketsIn != 90 || rec.SIPPacketsOut != 100 || rec.WebRTCPacketsIn != 100 || rec.WebRTCPacketsOut != 95 {
		t.Errorf("packets: %+v", rec)
	}
	if rec.SIPLoss != 0.1 || rec.WebRTCLoss != 0 || rec.SIPJitterMs != 4 || rec.WebRTCJitterMs != 12 {
		t.Errorf("loss and jitter: %+v", rec)
	}
	if rec.SIPTransport != "udp4" || rec.WebRTCTransport != "tcp6" {
		t.Errorf("transports: %q, %q", rec.SIPTransport, rec.WebRTCTransport)
	}
	if want := cdr.EstimateMOS("PCMU", 0.1, 12, 0); rec.MOS != want {
		t.Errorf("MOS = %v, want %v", rec.MOS, want)
	}
	if got := whoEnded(cdr.CauseNormalTrunk, nil); got != cdr.EndedByTrunk {
		t.Errorf("whoEnded(trunk hung up) = %q", got)
	}
	if op := "ops"; whoEnded(cdr.CauseNormalTrunk, &op) != "ops" {
		t.Error("the operator who hung up is not the CDR's ended_by")
	}
}
