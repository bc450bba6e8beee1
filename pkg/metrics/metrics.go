// Package metrics holds the relay's Prometheus metrics, built on
// github.com/prometheus/client_golang, with its Go and process collectors.
//
// The packet path never touches a metric: legs keep plain per-call counters
// and the relay adds what they moved to the packet and byte counters at
// scrape time (see Options.Refresh) and when a call ends.
package metrics

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Dashboard is a Grafana dashboard (JSON, schema 39) of the relay's
// metrics: calls, set-up time, quality, packets, drops, CDRs, CPU and
// memory. Import it in Grafana and pick the Prometheus data source.
//
//go:embed dashboard.json
var Dashboard []byte

var metricNameRE = regexp.MustCompile(`\b(?:mediarelay|go|process)_[a-z0-9_]+\b`)

// DashboardMetrics lists the metric names the dashboard's queries use,
// sorted, as they appear in the queries (histograms with their _bucket,
// _sum or _count suffix).
func DashboardMetrics() ([]string, error) {
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(Dashboard, &d); err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	seen := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			return nil, fmt.Errorf("dashboard: panel %q has no query", p.Title)
		}
		for _, t := range p.Targets {
			for _, name := range metricNameRE.FindAllString(t.Expr, -1) {
				seen[name] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Label values of mediarelay_packets_total and mediarelay_bytes_total, and
// of the per-leg quality histograms.
const (
	LegWebRTC = "webrtc"
	LegSIP    = "sip"
	DirIn     = "in"
	DirOut    = "out"
)

// EndCauses are the CDR end causes; mediarelay_calls_total starts at zero
// for each, for every configured trunk, so that rate() works from the first
// scrape.
var EndCauses = []string{
	"normal", "normal_trunk", "busy", "no_answer", "cancelled", "media_timeout",
	"ice_failed", "trunk_unreachable", "rejected", "error", "admin_hangup",
}

// DropReasons are the drop reasons mediarelay_packets_dropped_total starts
// at zero for; others appear when first counted.
var DropReasons = []string{
	"unlatched_source", // from an address the leg is not latched to
	"malformed",        // not parseable RTP/RTCP
	"srtp_auth",        // SRTP/SRTCP authentication failed
	"srtp_replay",      // SRTP replay protection refused it
	"late",             // arrived too late for the jitter buffer or transcoder
	"no_route",         // no call owns the port or SSRC
	"queue_full",       // the outbound queue or socket buffer was full
}

// SetupFailureCodes are the SIP codes mediarelay_call_setup_failures_total
// starts at zero for; others appear when first counted.
var SetupFailureCodes = []string{"403", "404", "407", "480", "486", "488", "503"}

// Modes are the media modes of mediarelay_transcoded_calls_total:
// "e2e" is DTLS-SRTP end to end, forwarded without keys.
var Modes = []string{"passthrough", "transcode", "e2e"}

// ActiveCalls is a count of calls in progress on one trunk in one media mode.
type ActiveCalls struct {
	Trunk, Mode string
	N           int
}

// Options tell NewRelay what it cannot know itself.
type Options struct {
	// Trunks are the configured trunks' names: the trunk label of the call
	// counters starts at zero for each.
	Trunks []string
	// Refresh, if set, runs at each scrape before the packet and byte
	// counters are read, to add what calls in progress moved since.
	Refresh func()
	// Active, if set, reports the calls in progress at scrape time.
	Active func() []ActiveCalls
}

// Relay holds the relay's metrics and the registry they are in.
type Relay struct {
	reg *prometheus.Registry

	// CallsTotal is mediarelay_calls_total{cause,trunk}: ended calls by CDR end cause.
	CallsTotal *prometheus.CounterVec
	// CallSetupFailures is mediarelay_call_setup_failures_total{code}: calls
	// that failed before answer, by the SIP status code sent to the caller.
	CallSetupFailures *prometheus.CounterVec
	// Packets is mediarelay_packets_total{leg,dir}.
	Packets *prometheus.CounterVec
	// Bytes is mediarelay_bytes_total{leg,dir}: RTP/RTCP bytes as received
	// or sent on the socket.
	Bytes *prometheus.CounterVec
	// PacketsDropped is mediarelay_packets_dropped_total{reason}.
	PacketsDropped *prometheus.CounterVec
	// SIPRequests is mediarelay_sip_requests_total{method}: requests received.
	SIPRequests *prometheus.CounterVec
	// TranscodedCalls is mediarelay_transcoded_calls_total{mode,trunk}:
	// answered calls by media mode ("passthrough", "transcode", "e2e").
	TranscodedCalls *prometheus.CounterVec

	// CallSetup is mediarelay_call_setup_seconds{trunk,direction}: INVITE to answer.
	CallSetup *prometheus.HistogramVec
	// FirstMedia is mediarelay_call_first_media_seconds{trunk,direction}:
	// answer to the first packet received on both legs.
	FirstMedia *prometheus.HistogramVec
	// Duration is mediarelay_call_duration_seconds{trunk,direction}: answer to end.
	Duration *prometheus.HistogramVec
	// MOS, Loss and Jitter are the quality of each leg of a call at its
	// end: mediarelay_call_mos, mediarelay_call_loss_ratio and
	// mediarelay_call_jitter_seconds, by {trunk,leg}.
	MOS, Loss, Jitter *prometheus.HistogramVec

	// DTLSFailures is mediarelay_dtls_handshake_failures_total{leg,cause}.
	DTLSFailures *prometheus.CounterVec
	// ICEFailures is mediarelay_ice_failures_total{cause}.
	ICEFailures *prometheus.CounterVec
	// LegTransports is mediarelay_leg_transports_total{leg,transport}:
	// how each answered call's legs carried media (udp4, udp6, tcp4, tcp6).
	LegTransports *prometheus.CounterVec

	// WebRTC and SIP are the packet and byte counters of each leg.
	WebRTC, SIP LegCounters
}

// LegCounters are one leg's packet and byte counters, resolved once.
type LegCounters struct {
	PacketsIn, PacketsOut, BytesIn, BytesOut prometheus.Counter
}

// NewRelay makes a registry with the Go and process collectors and the
// relay's metrics.
func NewRelay(o Options) *Relay {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Relay{reg: reg}
	m.CallsTotal = m.NewCounterVec("mediarelay_calls_total", "Calls ended, by end cause and trunk.", "cause", "trunk")
	m.CallSetupFailures = m.NewCounterVec("mediarelay_call_setup_failures_total", "Calls that failed before answer, by SIP status code.", "code")
	m.PacketsDropped = m.NewCounterVec("mediarelay_packets_dropped_total", "Media packets dropped, by reason.", "reason")
	m.SIPRequests = m.NewCounterVec("mediarelay_sip_requests_total", "SIP requests received, by method.", "method")
	m.TranscodedCalls = m.NewCounterVec("mediarelay_transcoded_calls_total", "Answered calls by media mode and trunk.", "mode", "trunk")
	m.DTLSFailures = m.NewCounterVec("mediarelay_dtls_handshake_failures_total", "DTLS-SRTP set-ups that failed, by leg and cause.", "leg", "cause")
	m.ICEFailures = m.NewCounterVec("mediarelay_ice_failures_total", "WebRTC legs whose ICE failed, by cause.", "cause")
	m.LegTransports = m.NewCounterVec("mediarelay_leg_transports_total",
		"Ended calls' media legs by leg (webrtc, sip) and transport and address family (udp4, udp6, tcp4, tcp6: ICE-TCP).", "leg", "transport")

	callHist := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		reg.MustRegister(h)
		return h
	}
	m.CallSetup = callHist("mediarelay_call_setup_seconds", "Time from INVITE to answer, by trunk and direction.",
		[]float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120}, "trunk", "direction")
	m.FirstMedia = callHist("mediarelay_call_first_media_seconds", "Time from answer to the first media received on both legs, by trunk and direction.",
		[]float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10}, "trunk", "direction")
	m.Duration = callHist("mediarelay_call_duration_seconds", "Answered calls' time from answer to end, by trunk and direction.",
		[]float64{1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}, "trunk", "direction")
	m.MOS = callHist("mediarelay_call_mos", "Estimated MOS of each leg of a call at its end, by trunk and leg.",
		[]float64{1, 1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4}, "trunk", "leg")
	m.Loss = callHist("mediarelay_call_loss_ratio", "Fraction of packets lost towards the relay on each leg of a call, at its end, by trunk and leg.",
		[]float64{0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5}, "trunk", "leg")
	m.Jitter = callHist("mediarelay_call_jitter_seconds", "Interarrival jitter (RFC 3550) of each leg of a call at its end, by trunk and leg.",
		[]float64{0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5}, "trunk", "leg")

	m.Packets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mediarelay_packets_total",
		Help: "RTP and RTCP packets forwarded, by leg and direction."}, []string{"leg", "dir"})
	m.Bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mediarelay_bytes_total",
		Help: "RTP and RTCP bytes forwarded, by leg and direction."}, []string{"leg", "dir"})
	reg.MustRegister(&refreshed{refresh: o.Refresh, cs: []prometheus.Collector{m.Packets, m.Bytes}})
	leg := func(name string) LegCounters {
		return LegCounters{
			PacketsIn:  m.Packets.WithLabelValues(name, DirIn),
			PacketsOut: m.Packets.WithLabelValues(name, DirOut),
			BytesIn:    m.Bytes.WithLabelValues(name, DirIn),
			BytesOut:   m.Bytes.WithLabelValues(name, DirOut),
		}
	}
	m.WebRTC, m.SIP = leg(LegWebRTC), leg(LegSIP)

	if o.Active != nil {
		reg.MustRegister(&activeCollector{active: o.Active})
	}
	for _, reason := range DropReasons {
		m.PacketsDropped.WithLabelValues(reason)
	}
	for _, code := range SetupFailureCodes {
		m.CallSetupFailures.WithLabelValues(code)
	}
	for _, t := range o.Trunks {
		for _, cause := range EndCauses {
			m.CallsTotal.WithLabelValues(cause, t)
		}
		for _, mode := range Modes {
			m.TranscodedCalls.WithLabelValues(mode, t)
		}
	}
	return m
}

// NewCounterVec registers a counter family with the given label names.
// A bad or duplicate name is a programming error and panics.
func (m *Relay) NewCounterVec(name, help string, labelNames ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labelNames)
	m.reg.MustRegister(v)
	return v
}

// NewGaugeVec registers a gauge family with the given label names.
// A bad or duplicate name is a programming error and panics.
func (m *Relay) NewGaugeVec(name, help string, labelNames ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labelNames)
	m.reg.MustRegister(v)
	return v
}

// CDRStats are a CDR store's counts.
type CDRStats struct {
	Written, Dropped, Failed, Retries uint64
	Queued, Spooled                   int
}

// CDR exports a CDR store's counts, read at scrape time:
// mediarelay_cdr_records_total{result} (written, dropped: the queue was
// full, failed: not written), mediarelay_cdr_retries_total (attempts that
// found the database unreachable), mediarelay_cdr_queue_length and
// mediarelay_cdr_spooled (records waiting in the spool file). Call it once.
func (m *Relay) CDR(stats func() CDRStats) {
	m.reg.MustRegister(&cdrCollector{stats: stats})
}

var (
	cdrRecordsDesc = prometheus.NewDesc("mediarelay_cdr_records_total", "CDRs handed to the store, by result (written, dropped: queue full, failed: not written).", []string{"result"}, nil)
	cdrRetriesDesc = prometheus.NewDesc("mediarelay_cdr_retries_total", "CDR writes that found the database unreachable.", nil, nil)
	cdrQueueDesc   = prometheus.NewDesc("mediarelay_cdr_queue_length", "CDRs waiting to be written.", nil, nil)
	cdrSpoolDesc   = prometheus.NewDesc("mediarelay_cdr_spooled", "CDRs waiting in the spool file for the database.", nil, nil)
)

type cdrCollector struct {
	stats func() CDRStats
}

func (c *cdrCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cdrRecordsDesc
	ch <- cdrRetriesDesc
	ch <- cdrQueueDesc
	ch <- cdrSpoolDesc
}

func (c *cdrCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for result, n := range map[string]uint64{"written": st.Written, "dropped": st.Dropped, "failed": st.Failed} {
		ch <- prometheus.MustNewConstMetric(cdrRecordsDesc, prometheus.CounterValue, float64(n), result)
	}
	ch <- prometheus.MustNewConstMetric(cdrRetriesDesc, prometheus.CounterValue, float64(st.Retries))
	ch <- prometheus.MustNewConstMetric(cdrQueueDesc, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(cdrSpoolDesc, prometheus.GaugeValue, float64(st.Spooled))
}

// Sum gathers the registry as a scrape would and adds up the samples of
// the counter or gauge name whose labels include match (name, value
// pairs). It is for reports that summarise (rtpengine's ng statistics),
// not for the packet path.
func (m *Relay) Sum(name string, match ...string) float64 {
	families, err := m.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, s := range f.GetMetric() {
			for i := 0; i+1 < len(match); i += 2 {
				found := false
				for _, l := range s.GetLabel() {
					found = found || (l.GetName() == match[i] && l.GetValue() == match[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += s.GetCounter().GetValue() + s.GetGauge().GetValue()
		}
	}
	return sum
}

// Handler serves the registry for Prometheus scrapes.
func (m *Relay) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// refreshed collects cs after running refresh, so that counters kept up
// to date lazily are current when read.
type refreshed struct {
	refresh func()
	cs      []prometheus.Collector
}

func (r *refreshed) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range r.cs {
		c.Describe(ch)
	}
}

func (r *refreshed) Collect(ch chan<- prometheus.Metric) {
	if r.refresh != nil {
		r.refresh()
	}
	for _, c := range r.cs {
		c.Collect(ch)
	}
}

var (
	activeDesc = prometheus.NewDesc("mediarelay_calls_active", "Calls in progress.", nil, nil)
	trunkDesc  = prometheus.NewDesc("mediarelay_trunk_calls_active", "Calls in progress, by trunk and media mode (pending before media is negotiated).",
		[]string{"trunk", "mode"}, nil)
)

// activeCollector reports the calls in progress, counted at scrape time.
type activeCollector struct {
	active func() []ActiveCalls
}

func (a *activeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeDesc
	ch <- trunkDesc
}

func (a *activeCollector) Collect(ch chan<- prometheus.Metric) {
	total := 0
	for _, c := range a.active() {
		total += c.N
		ch <- prometheus.MustNewConstMetric(trunkDesc, prometheus.GaugeValue, float64(c.N), c.Trunk, c.Mode)
	}
	ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(total))
}

// MediaLoops exports the media loops' work, read at scrape time:
// mediarelay_media_loop_busy_seconds_total{loop} (time spent serving
// rounds; its rate is the share of a core the loop uses, and a second
// loop takes new calls only once the first is busy) and
// mediarelay_media_loop_sockets{loop}. stats returns, loop by loop, the
// busy time and the sockets served. Call it once.
func (m *Relay) MediaLoops(stats func() (busy []time.Duration, sockets []int)) {
	m.reg.MustRegister(&loopCollector{stats: stats})
}

var (
	loopBusyDesc    = prometheus.NewDesc("mediarelay_media_loop_busy_seconds_total", "Time each media loop spent serving rounds of packets.", []string{"loop"}, nil)
	loopSocketsDesc = prometheus.NewDesc("mediarelay_media_loop_sockets", "Sockets each media loop serves.", []string{"loop"}, nil)
)

type loopCollector struct {
	stats func() ([]time.Duration, []int)
}

func (c *loopCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- loopBusyDesc
	ch <- loopSocketsDesc
}

func (c *loopCollector) Collect(ch chan<- prometheus.Metric) {
	busy, sockets := c.stats()
	for i, b := range busy {
		ch <- prometheus.MustNewConstMetric(loopBusyDesc, prometheus.CounterValue, b.Seconds(), strconv.Itoa(i))
	}
	for i, n := range sockets {
		ch <- prometheus.MustNewConstMetric(loopSocketsDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(i))
	}
}
