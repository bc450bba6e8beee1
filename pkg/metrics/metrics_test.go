package metrics

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Lines of the text format this package writes: comments and samples.
var (
	helpLine   = regexp.MustCompile(`^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$`)
	typeLine   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$`)
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? (\S+)$`)
)

// parse checks every line of a scrape and returns the samples by series
// (name plus label text).
func parse(t *testing.T, text string) map[string]float64 {
	t.Helper()
	samples := make(map[string]float64)
	typed := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	prevName := ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			if !helpLine.MatchString(line) {
				t.Errorf("line %d: bad HELP: %q", n, line)
			}
		case strings.HasPrefix(line, "# TYPE "):
			m := typeLine.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("line %d: bad TYPE: %q", n, line)
				continue
			}
			if m[1] < prevName {
				t.Errorf("line %d: %s after %s: families not sorted", n, m[1], prevName)
			}
			typed, prevName = m[1], m[1]
		default:
			m := sampleLine.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("line %d: bad sample: %q", n, line)
				continue
			}
			if m[1] != typed {
				t.Errorf("line %d: sample of %s under TYPE %s", n, m[1], typed)
			}
			v, err := strconv.ParseFloat(m[len(m)-1], 64)
			if err != nil {
				t.Errorf("line %d: bad value: %q", n, line)
			}
			series := strings.TrimSuffix(line, " "+m[len(m)-1])
			if _, dup := samples[series]; dup {
				t.Errorf("line %d: series %s twice", n, series)
			}
			samples[series] = v
		}
	}
	return samples
}

func scrape(t *testing.T, reg *Registry) string {
	t.Helper()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("Content-Type = %q, want %q", ct, ContentType)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func TestExposition(t *testing.T) {
	reg := NewRegistry()
	c := reg.NewCounter("test_events_total", "Events.\nWith a \\ backslash.")
	c.Add(1000000)
	g := reg.NewGauge("test_temperature", "A gauge.")
	g.Set(-2.5)
	v := reg.NewCounterVec("test_requests_total", "Requests.", "method", "path")
	v.With("GET", "/b").Inc()
	v.With("GET", "/a").Add(3)
	v.With("POST", `say "hi"`+"\n\\").Inc()
	reg.NewGaugeVec("test_empty", "No children yet.", "x")

	got := scrape(t, reg)
	want := `# HELP test_empty No children yet.
# TYPE test_empty gauge
# HELP test_events_total Events.\nWith a \\ backslash.
# TYPE test_events_total counter
test_events_total 1000000
# HELP test_requests_total Requests.
# TYPE test_requests_total counter
test_requests_total{method="GET",path="/a"} 3
test_requests_total{method="GET",path="/b"} 1
test_requests_total{method="POST",path="say \"hi\"\n\\"} 1
# HELP test_temperature A gauge.
# TYPE test_temperature gauge
test_temperature -2.5
`
	if got != want {
		t.Errorf("scrape =\n%s\nwant\n%s", got, want)
	}
	parse(t, got)
	if again := scrape(t, reg); again != got {
		t.Errorf("second scrape differs:\n%s", again)
	}
}

func TestRelayMetrics(t *testing.T) {
	reg := NewRegistry()
	m := NewRelay(reg)
	m.CallsActive.Inc()
	m.CallsActive.Inc()
	m.CallsActive.Dec()
	m.CallsTotal.With("busy").Inc()
	m.CallSetupFailures.With("486").Inc()
	m.WebRTC.PacketsIn.Add(50)
	m.WebRTC.BytesIn.Add(50 * 172)
	m.SIP.PacketsOut.Inc()
	m.Drops.UnlatchedSource.Inc()
	m.SIPRequests.With("INVITE").Inc()
	m.TranscodedCalls.With("transcode").Inc()
	if m.Leg(LegSIP).PacketsOut != m.SIP.PacketsOut || m.Packets.With("sip", "out") != m.SIP.PacketsOut {
		t.Error("Leg and With do not return the pre-resolved child")
	}

	s := parse(t, scrape(t, reg))
	for series, want := range map[string]float64{
		`mediarelay_calls_active`:                                     1,
		`mediarelay_calls_total{cause="busy"}`:                        1,
		`mediarelay_calls_total{cause="normal"}`:                      0,
		`mediarelay_call_setup_failures_total{code="486"}`:            1,
		`mediarelay_packets_total{leg="webrtc",dir="in"}`:             50,
		`mediarelay_bytes_total{leg="webrtc",dir="in"}`:               8600,
		`mediarelay_packets_total{leg="sip",dir="out"}`:               1,
		`mediarelay_packets_total{leg="sip",dir="in"}`:                0,
		`mediarelay_packets_dropped_total{reason="unlatched_source"}`: 1,
		`mediarelay_packets_dropped_total{reason="srtp_replay"}`:      0,
		`mediarelay_sip_requests_total{method="INVITE"}`:              1,
		`mediarelay_transcoded_calls_total{mode="transcode"}`:         1,
		`mediarelay_transcoded_calls_total{mode="passthrough"}`:       0,
	} {
		got, ok := s[series]
		if !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"} {
		if v, ok := s[name]; !ok || v < 0 {
			t.Errorf("%s = %v, %v; want a non-negative sample", name, v, ok)
		}
	}
	if s["process_resident_memory_bytes"] < 1<<20 {
		t.Errorf("process_resident_memory_bytes = %v, implausibly small", s["process_resident_memory_bytes"])
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	line := "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 8 0 9999 123456789 2048 18446744073709551615\n"
	st, ok := parseProcStat([]byte(line))
	if !ok || st.utime != 150 || st.stime != 50 || st.startTicks != 9999 || st.vsize != 123456789 || st.rssPages != 2048 {
		t.Errorf("parseProcStat = %+v, %v", st, ok)
	}
	if _, ok := parseProcStat([]byte("garbage")); ok {
		t.Error("parseProcStat accepted garbage")
	}
}

func TestConcurrentIncrements(t *testing.T) {
	reg := NewRegistry()
	v := reg.NewCounterVec("test_total", "t", "k")
	g := reg.NewGauge("test_gauge", "g")
	const workers, each = 8, 10000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Resolve concurrently too: all workers must get the same child.
			c := v.With("shared")
			own := v.With(strconv.Itoa(w))
			for range each {
				c.Inc()
				own.Add(2)
				g.Add(1)
				g.Dec()
				g.Inc()
			}
		}()
	}
	// Scrape while counting: must not race (run with -race).
	var scrapes sync.WaitGroup
	scrapes.Add(1)
	go func() {
		defer scrapes.Done()
		for range 20 {
			reg.WriteTo(io.Discard)
		}
	}()
	wg.Wait()
	scrapes.Wait()
	if got := v.With("shared").Value(); got != workers*each {
		t.Errorf("shared = %d, want %d", got, workers*each)
	}
	for w := range workers {
		if got := v.With(strconv.Itoa(w)).Value(); got != 2*each {
			t.Errorf("worker %d = %d, want %d", w, got, 2*each)
		}
	}
	if got := g.Value(); got != workers*each {
		t.Errorf("gauge = %v, want %d", got, workers*each)
	}
}

func TestZeroAllocs(t *testing.T) {
	reg := NewRegistry()
	c := reg.NewCounterVec("test_total", "t", "leg", "dir").With("sip", "in")
	g := reg.NewGaugeVec("test_gauge", "g", "x").With("y")
	for name, f := range map[string]func(){
		"Counter.Inc": func() { c.Inc() },
		"Counter.Add": func() { c.Add(172) },
		"Gauge.Set":   func() { g.Set(3) },
		"Gauge.Add":   func() { g.Add(1.5) },
		"Gauge.Inc":   func() { g.Inc() },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}

func TestRegistrationErrorsPanic(t *testing.T) {
	for name, f := range map[string]func(r *Registry){
		"bad name":       func(r *Registry) { r.NewCounter("bad-name", "") },
		"bad label":      func(r *Registry) { r.NewCounterVec("ok_total", "", "bad-label") },
		"reserved label": func(r *Registry) { r.NewCounterVec("ok_total", "", "__name") },
		"repeated label": func(r *Registry) { r.NewCounterVec("ok_total", "", "a", "a") },
		"duplicate":      func(r *Registry) { r.NewCounter("x_total", ""); r.NewGauge("x_total", "") },
		"wrong arity":    func(r *Registry) { r.NewCounterVec("ok_total", "", "a", "b").With("only-one") },
		"twice NewRelay": func(r *Registry) { NewRelay(r); NewRelay(r) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("did not panic")
				}
			}()
			f(NewRegistry())
		})
	}
}

func TestFuncMetricsAndHead(t *testing.T) {
	reg := NewRegistry()
	n := 0.0
	reg.NewGaugeFunc("test_queue_length", "q", func() float64 { return 7 })
	reg.NewCounterFunc("test_dropped_total", "d", func() float64 { n++; return n })
	s := parse(t, scrape(t, reg))
	if s["test_queue_length"] != 7 || s["test_dropped_total"] != 1 {
		t.Errorf("samples = %v", s)
	}
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	resp, err := http.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD status = %d", resp.StatusCode)
	}
}

// BenchmarkCounterAdd measures the per-packet cost of counting; run with
// -benchmem to see 0 allocs/op.
func BenchmarkCounterAdd(b *testing.B) {
	c := NewRegistry().NewCounterVec("bench_total", "b", "leg", "dir").With("sip", "in")
	b.ReportAllocs()
	for b.Loop() {
		c.Add(172)
	}
}

// BenchmarkCounterAddParallel is the same with every core adding to one
// counter, the worst case of a shared per-relay counter.
func BenchmarkCounterAddParallel(b *testing.B) {
	c := NewRegistry().NewCounter("bench_total", "b")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1)
		}
	})
}
