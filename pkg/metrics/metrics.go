// Package metrics is a small Prometheus registry: counters and gauges that
// cost one atomic operation to update, and an HTTP handler writing the
// text exposition format 0.0.4. It exists so the packet path can count
// without a client library's allocations or locks.
//
// Registering a metric with a bad or duplicate name, or asking a vector
// for the wrong number of label values, is a programming error and panics.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Counter is a monotonically increasing integer. Inc and Add are a single
// atomic add and never allocate. The zero value is ready to use, but only
// counters made by a Registry are exported.
type Counter struct {
	v atomic.Uint64
	// Pad to a cache line so that two hot counters allocated side by side
	// (packets in and out) do not slow each other down by false sharing.
	_ [56]byte
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is a value that goes up and down, stored as float64 bits. Set is an
// atomic store; Add, Inc and Dec are a compare-and-swap loop. None allocate.
type Gauge struct {
	bits atomic.Uint64
	_    [56]byte // see Counter
}

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Inc adds one.
func (g *Gauge) Inc() { g.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.Add(-1) }

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// vec is the label-value → child map shared by CounterVec and GaugeVec.
type vec[T any] struct {
	name   string
	labels []string
	mu     sync.RWMutex
	kids   map[string]*child[T]
}

type child[T any] struct {
	values []string
	metric T
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s has labels %v, got %d values %q", v.name, v.labels, len(values), values))
	}
	key := strings.Join(values, "\xff") // 0xff never occurs in valid UTF-8
	v.mu.RLock()
	c := v.kids[key]
	v.mu.RUnlock()
	if c != nil {
		return &c.metric
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.kids[key]; c == nil {
		c = &child[T]{values: append([]string(nil), values...)}
		v.kids[key] = c
	}
	return &c.metric
}

// each calls f for every child; f must not call with.
func (v *vec[T]) each(f func(values []string, m *T)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, c := range v.kids {
		f(c.values, &c.metric)
	}
}

// CounterVec is a family of counters told apart by fixed label names.
type CounterVec struct{ v *vec[Counter] }

// With returns the counter for the label values, in the order the label
// names were given, creating it on first use. It takes a lock and may
// allocate: resolve children once and keep the *Counter for hot paths.
func (cv *CounterVec) With(labelValues ...string) *Counter { return cv.v.with(labelValues) }

// GaugeVec is a family of gauges told apart by fixed label names.
type GaugeVec struct{ v *vec[Gauge] }

// With returns the gauge for the label values, creating it on first use.
// Like CounterVec.With, keep the result rather than calling it per packet.
func (gv *GaugeVec) With(labelValues ...string) *Gauge { return gv.v.with(labelValues) }

// sample is one line of output.
type sample struct {
	values []string
	value  float64
}

// family is one metric name with its HELP, TYPE and a way to read its samples.
type family struct {
	name, help, typ string
	labels          []string
	collect         func(emit func(values []string, v float64))
}

// Registry holds metric families and writes them for Prometheus.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
	before   []func()
}

// BeforeScrape registers f to run at the start of every WriteTo: the
// place to bring counters up to date that are kept elsewhere between
// scrapes (a call's packet counts, kept by its legs).
func (r *Registry) BeforeScrape(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.before = append(r.before, f)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{families: make(map[string]*family)}
}

func (r *Registry) register(f *family) {
	if !metricNameRE.MatchString(f.name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", f.name))
	}
	seen := make(map[string]bool, len(f.labels))
	for _, l := range f.labels {
		if !labelNameRE.MatchString(l) || strings.HasPrefix(l, "__") || seen[l] {
			panic(fmt.Sprintf("metrics: %s: invalid or repeated label name %q", f.name, l))
		}
		seen[l] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.families[f.name]; dup {
		panic(fmt.Sprintf("metrics: %s registered twice", f.name))
	}
	r.families[f.name] = f
}

// NewCounter registers and returns a counter without labels.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := new(Counter)
	r.register(&family{name: name, help: help, typ: "counter", collect: func(emit func([]string, float64)) {
		emit(nil, float64(c.Value()))
	}})
	return c
}

// NewGauge registers and returns a gauge without labels.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := new(Gauge)
	r.register(&family{name: name, help: help, typ: "gauge", collect: func(emit func([]string, float64)) {
		emit(nil, g.Value())
	}})
	return g
}

// NewCounterVec registers a counter family with the given label names.
func (r *Registry) NewCounterVec(name, help string, labelNames ...string) *CounterVec {
	v := &vec[Counter]{name: name, labels: labelNames, kids: make(map[string]*child[Counter])}
	r.register(&family{name: name, help: help, typ: "counter", labels: labelNames, collect: func(emit func([]string, float64)) {
		v.each(func(values []string, c *Counter) { emit(values, float64(c.Value())) })
	}})
	return &CounterVec{v}
}

// NewGaugeVec registers a gauge family with the given label names.
func (r *Registry) NewGaugeVec(name, help string, labelNames ...string) *GaugeVec {
	v := &vec[Gauge]{name: name, labels: labelNames, kids: make(map[string]*child[Gauge])}
	r.register(&family{name: name, help: help, typ: "gauge", labels: labelNames, collect: func(emit func([]string, float64)) {
		v.each(func(values []string, g *Gauge) { emit(values, g.Value()) })
	}})
	return &GaugeVec{v}
}

// NewGaugeFunc registers a gauge whose value f computes at scrape time,
// for values owned elsewhere (a pool's size, a queue's length). f must be
// safe to call from the HTTP handler's goroutine.
func (r *Registry) NewGaugeFunc(name, help string, f func() float64) {
	r.register(&family{name: name, help: help, typ: "gauge", collect: func(emit func([]string, float64)) {
		emit(nil, f())
	}})
}

// NewCounterFunc registers a counter whose value f computes at scrape
// time, for counts kept elsewhere (e.g. cdr.Store.Stats). f must never
// return less than it did before.
func (r *Registry) NewCounterFunc(name, help string, f func() float64) {
	r.register(&family{name: name, help: help, typ: "counter", collect: func(emit func([]string, float64)) {
		emit(nil, f())
	}})
}

// registerOptional registers a family whose sample may be missing (a
// /proc file that cannot be read); then only HELP and TYPE are written.
func (r *Registry) registerOptional(name, help, typ string, f func() (float64, bool)) {
	r.register(&family{name: name, help: help, typ: typ, collect: func(emit func([]string, float64)) {
		if v, ok := f(); ok {
			emit(nil, v)
		}
	}})
}

// WriteTo writes every family in the text exposition format 0.0.4, sorted
// by metric name and then by label values, so that successive scrapes
// diff cleanly.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	before := r.before
	r.mu.Unlock()
	for _, f := range before {
		f()
	}
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })

	cw := &countingWriter{w: w}
	bw := bufio.NewWriter(cw)
	var samples []sample
	for _, f := range fams {
		samples = samples[:0]
		f.collect(func(values []string, v float64) { samples = append(samples, sample{values, v}) })
		sort.Slice(samples, func(i, j int) bool { return lessValues(samples[i].values, samples[j].values) })

		bw.WriteString("# HELP ")
		bw.WriteString(f.name)
		bw.WriteByte(' ')
		bw.WriteString(escapeHelp(f.help))
		bw.WriteString("\n# TYPE ")
		bw.WriteString(f.name)
		bw.WriteByte(' ')
		bw.WriteString(f.typ)
		bw.WriteByte('\n')
		for _, s := range samples {
			bw.WriteString(f.name)
			if len(f.labels) > 0 {
				bw.WriteByte('{')
				for i, l := range f.labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(l)
					bw.WriteString(`="`)
					bw.WriteString(escapeLabelValue(s.values[i]))
					bw.WriteByte('"')
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(formatValue(s.value))
			bw.WriteByte('\n')
		}
	}
	err := bw.Flush()
	return cw.n, err
}

// Handler serves the registry for Prometheus scrapes.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		if req.Method == http.MethodHead {
			return
		}
		// A write error means the scraper went away; nothing to tell it.
		r.WriteTo(w)
	})
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func lessValues(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// escapeHelp escapes backslash and newline, as the format requires in HELP.
func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// escapeLabelValue escapes backslash, newline and double quote.
func escapeLabelValue(s string) string { return labelEscaper.Replace(s) }

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		// Counts print as integers ("1000000", not "1e+06"): easier to read
		// and exact below 2^53.
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
