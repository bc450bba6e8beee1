package benchmarks

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario is what one benchmark run exercises.
type Scenario struct {
	Name       string `json:"name"`
	Codec      Codec  `json:"-"`
	CodecName  string `json:"browser_codec"`
	TrunkCodec string `json:"trunk_codec"` // the only codec the trunk offers/accepts
	TrunkSRTP  bool   `json:"trunk_srtp"`  // SDES-SRTP (AES_CM_128_HMAC_SHA1_80) on the trunk leg
	Echo       bool   `json:"echo"`        // trunk echoes (else sinks)
	// E2E is an end-to-end call (the trunk's media_mode e2e): the browser's
	// DTLS-SRTP is with the trunk UAS, and the relay forwards it opaquely.
	E2E bool `json:"e2e,omitempty"`
}

// Transcode reports whether the two legs use different codecs.
func (s Scenario) Transcode() bool { return !strings.EqualFold(s.TrunkCodec, s.Codec.Name) }

// RunParams are the load shape of one run.
type RunParams struct {
	Calls        int
	Rate         float64 // calls started per second during the ramp
	Hold         time.Duration
	Settle       time.Duration // after the ramp, before the window opens
	SetupTimeout time.Duration
}

// target is a relay under test.
type target struct {
	name    string
	pid     int // 0: CPU and memory not measured
	newSig  func(ctx context.Context, onBye func(string)) (signaler, error)
	support string // non-empty: the scenario is not supported, and why
	// api is mediarelay's call API (GET /api/calls), which says the
	// transport of each call's browser leg; "" when there is none.
	api string
}

// DirStats is one direction of media over the steady window.
type DirStats struct {
	Expected     int64   `json:"expected"`
	Lost         int64   `json:"lost"`
	LossPct      float64 `json:"loss_pct"`
	JitterMeanMs float64 `json:"jitter_mean_ms"`
	JitterMaxMs  float64 `json:"jitter_max_ms"`
	DelayMs      Dist    `json:"delay_ms"`
}

// ProcStats is a process's CPU and memory over the steady window.
type ProcStats struct {
	Pid                int     `json:"pid"`
	CPUCores           float64 `json:"cpu_cores"`
	CPUUserMicros      float64 `json:"cpu_user_us"`
	CPUSysMicros       float64 `json:"cpu_sys_us"`
	CPUMicrosPerCallS  float64 `json:"cpu_us_per_call_second"`
	CallsPerCore       float64 `json:"calls_per_core"`
	RSSIdleBytes       int64   `json:"rss_idle_bytes,omitempty"`
	RSSLoadedBytes     int64   `json:"rss_loaded_bytes,omitempty"`
	MemPerCallBytes    float64 `json:"mem_per_call_bytes,omitempty"`
	Measured           bool    `json:"measured"`
	MeasurementComment string  `json:"comment,omitempty"`
}

// Result is one run of one scenario against one relay.
type Result struct {
	Target       string         `json:"target"`
	Scenario     Scenario       `json:"scenario"`
	Calls        int            `json:"calls"`
	Rate         float64        `json:"rate"`
	WindowS      float64        `json:"window_s"`
	Unsupported  string         `json:"unsupported,omitempty"`
	Attempted    int            `json:"attempted"`
	Established  int            `json:"established"`
	Concurrent   int            `json:"concurrent"` // up for the whole window
	Failed       int            `json:"failed"`
	FailedBy     map[string]int `json:"failed_by"`
	SetupMs      Dist           `json:"setup_ms"`       // INVITE -> 200 OK
	FirstAudioMs Dist           `json:"first_audio_ms"` // INVITE -> first audio packet back
	Up           DirStats       `json:"browser_to_trunk"`
	Down         DirStats       `json:"trunk_to_browser"`
	RTTMs        Dist           `json:"echo_rtt_ms"`
	DelayNote    string         `json:"delay_note,omitempty"`
	// BrowserTransport is how the load client's calls reached the relay:
	// udp, or tcp (ICE-TCP).
	BrowserTransport Transport `json:"browser_transport"`
	// RelayLegTransports counts the calls' browser legs by the transport
	// of their selected pair as the relay itself reports it (its call
	// API: udp4, tcp4, ...), read at the end of the window; nil when the
	// relay has no such API (rtpengine, --control ng).
	RelayLegTransports    map[string]int `json:"relay_browser_leg_transports,omitempty"`
	RelayLegTransportsErr string         `json:"relay_browser_leg_transports_error,omitempty"`
	// UASDTLSHandshakes is how many DTLS handshakes the trunk UAS completed
	// with browsers during the run: on an end-to-end scenario, one per call.
	UASDTLSHandshakes uint64 `json:"uas_dtls_handshakes"`
	// RelayModes counts the calls by media mode as the relay's call API
	// reports it (passthrough, transcode, e2e), read with RelayLegTransports.
	RelayModes map[string]int `json:"relay_modes,omitempty"`
	Relay      ProcStats      `json:"relay"`
	// CPURuns is the relay's CPU per call-second in each run of the step
	// with --repeat (this result is the median one); nil for one run.
	CPURuns []float64 `json:"relay_cpu_us_per_call_s_runs,omitempty"`
	LoadGen ProcStats `json:"load_generator"`
	// LoadClient is the browser side alone: the load client's engine
	// threads, without the trunk UAS that shares the process.
	LoadClient ProcStats `json:"load_client"`
	UnknownRTP uint64    `json:"uas_unknown_rtp"`
	// SendRatePct is the share of the nominal 50 packets/s per call the load
	// client actually sent in the window; well below 100 means the load
	// generator, not the relay, was the limit.
	SendRatePct float64 `json:"send_rate_pct"`
	// Receive-buffer overflows on each process's UDP sockets in the window.
	RelayUDPDrops   int64 `json:"relay_udp_drops"`
	LoadGenUDPDrops int64 `json:"load_generator_udp_drops"`
}

// minSendRatePct is the send rate below which a run measures the load
// generator rather than the relay.
const minSendRatePct = 97

// Clean reports whether the run had no failed calls and loss within maxLossPct.
//
// Datagrams the relay's kernel dropped for a full receive buffer count as
// loss too: a transcoding relay sends on its own clock and conceals what it
// lost, so the far end may see no gap at all.
func (r *Result) Clean(k KneeLimits) bool {
	return r.Unsupported == "" && r.relayKeptUp(k) && !r.LoadGenLimited()
}

// KneeLimits are what a ladder step must stay within to be before the
// knee.
type KneeLimits struct {
	// LossPct bounds the loss in either direction and the relay's
	// receive-buffer drops, in percent.
	LossPct float64
	// DelayMs bounds the one-way delay p99 in either direction where it
	// is measured (not through a transcoder); 0 turns the bound off. A
	// relay past its capacity that queues rather than drops loses nothing,
	// but its delay grows by seconds.
	DelayMs float64
}

// relayKeptUp reports whether the relay carried the step within k:
// no failed call, loss, drops and delay in bounds.
func (r *Result) relayKeptUp(k KneeLimits) bool {
	if r.Failed != 0 || r.Up.LossPct > k.LossPct || r.Down.LossPct > k.LossPct || r.RelayDropPct() > k.LossPct {
		return false
	}
	if k.DelayMs > 0 {
		for _, d := range []Dist{r.Up.DelayMs, r.Down.DelayMs} {
			if d.N > 0 && d.P99 > k.DelayMs {
				return false
			}
		}
	}
	return true
}

// RelayDropPct is the relay's receive-buffer drops as a percentage of the
// packets it should have received in the window (both directions).
func (r *Result) RelayDropPct() float64 {
	n := r.Up.Expected + r.Down.Expected
	if n == 0 {
		return 0
	}
	return 100 * float64(r.RelayUDPDrops) / float64(n)
}

// LoadGenLimited reports whether the load client could not keep the send rate.
func (r *Result) LoadGenLimited() bool {
	return r.Unsupported == "" && r.Concurrent > 0 && r.SendRatePct < minSendRatePct
}

// bench holds what runs share: the UAS, the client, the output.
type bench struct {
	uas    *UAS
	client *Client
	log    *slog.Logger
	stderr io.Writer
	tty    bool
}

// run places p.Calls calls through t, holds them for a steady window, and measures.
func (b *bench) run(ctx context.Context, t target, sc Scenario, p RunParams) (*Result, error) {
	res := &Result{Target: t.name, Scenario: sc, Calls: p.Calls, Rate: p.Rate, FailedBy: map[string]int{}, BrowserTransport: b.client.transport}
	if t.support != "" {
		res.Unsupported = t.support
		return res, nil
	}
	var calls sync.Map // Call-ID -> *call, for BYEs from the relay
	sig, err := t.newSig(ctx, func(id string) {
		if v, ok := calls.Load(id); ok {
			c := v.(*call)
			c.sending.Store(false)
			c.dropped.Store(true)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%s: signalling: %w", t.name, err)
	}
	defer sig.Close()

	var rssIdle int64
	if t.pid > 0 {
		rssIdle, _ = ReadRSS(t.pid)
	}
	handshakes0 := b.uas.DTLSHandshakes()
	runID := randToken(3)
	all := make([]*call, p.Calls)
	errs := make([]error, p.Calls)
	var wg sync.WaitGroup
	var setupDone, setupFailed atomic.Int64
	stopProgress := b.progress(ctx, t, "ramp", p.Calls, &setupDone, &setupFailed)
	start := time.Now()
	for i := 0; i < p.Calls; i++ {
		at := start.Add(time.Duration(float64(i) / p.Rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				stopProgress()
				return nil, ctx.Err()
			}
		}
		c := &call{idx: i, id: randToken(8) + "@mediarelay-bench", user: fmt.Sprintf("b%s%05d", runID, i), sig: sig}
		all[i] = c
		calls.Store(c.id, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.SetupTimeout)
			defer cancel()
			errs[i] = b.client.place(cctx, c, p.SetupTimeout)
			if errs[i] != nil {
				setupFailed.Add(1)
				b.log.Debug("call failed", "target", t.name, "call", c.user, "err", errs[i])
			} else {
				setupDone.Add(1)
			}
		}()
	}
	wg.Wait()
	stopProgress()
	res.Attempted = p.Calls
	res.UASDTLSHandshakes = b.uas.DTLSHandshakes() - handshakes0

	var up []*call
	var setup, first []float64
	for i, c := range all {
		if errs[i] != nil {
			reason := "error"
			if e, ok := errs[i].(*errSetup); ok {
				reason = e.reason
			}
			res.FailedBy[reason]++
			continue
		}
		res.Established++
		setup = append(setup, ms(c.t200.Sub(c.tInvite)))
		first = append(first, ms(c.tFirst.Sub(c.tInvite)))
		up = append(up, c)
	}
	res.SetupMs = Summarize(setup)
	res.FirstAudioMs = Summarize(first)
	if len(errs) > 0 {
		for i, e := range errs {
			if e != nil {
				b.log.Warn("call setup failed", "target", t.name, "call", all[i].user, "err", e)
				break // one example is enough; the table counts them all
			}
		}
	}

	// Steady window.
	if err := sleepCtx(ctx, p.Settle); err != nil {
		return nil, err
	}
	type snap struct{ up, down StreamSnapshot }
	before := make([]snap, len(up))
	for i, c := range up {
		before[i].down = c.snapshot()
		before[i].up, _ = b.uas.CallStats(c.user)
		c.takeDelays()
		b.uas.TakeDelays(c.user)
	}
	b.client.SetMeasuring(true)
	b.uas.SetMeasuring(true)
	relayA, relayErr := CPUSample{}, error(nil)
	if t.pid > 0 {
		relayA, relayErr = ReadCPU(t.pid)
	}
	selfA, _ := ReadCPU(0)
	clientA, clientErr := b.client.CPU()
	sentA := b.client.sent.Load()
	var relayDropsA int64
	if t.pid > 0 {
		relayDropsA, _ = ReadUDPDrops(t.pid)
	}
	selfDropsA, _ := ReadUDPDrops(0)
	stopProgress = b.progress(ctx, t, "hold", len(up), &setupDone, &setupFailed)
	err = sleepCtx(ctx, p.Hold)
	stopProgress()
	if err != nil {
		return nil, err
	}
	selfB, _ := ReadCPU(0)
	var clientB CPUSample
	if clientErr == nil {
		clientB, clientErr = b.client.CPU()
	}
	sentB := b.client.sent.Load()
	if t.pid > 0 {
		if d, err := ReadUDPDrops(t.pid); err == nil {
			res.RelayUDPDrops = d - relayDropsA
		}
	}
	if d, err := ReadUDPDrops(0); err == nil {
		res.LoadGenUDPDrops = d - selfDropsA
	}
	var relayB CPUSample
	if t.pid > 0 && relayErr == nil {
		relayB, relayErr = ReadCPU(t.pid)
	}
	b.client.SetMeasuring(false)
	b.uas.SetMeasuring(false)
	var rssLoaded int64
	if t.pid > 0 {
		rssLoaded, _ = ReadRSS(t.pid)
	}
	if t.api != "" {
		// After the window's readings: the request costs the relay CPU.
		res.RelayLegTransports, res.RelayModes, err = relayCalls(ctx, t.api)
		if err != nil {
			res.RelayLegTransportsErr = err.Error()
			b.log.Warn("relay call API", "url", t.api, "err", err)
		}
	}
	var upDelay, downDelay, rtt []float64
	var upJit, downJit []float64
	for i, c := range up {
		if c.dropped.Load() {
			res.FailedBy["dropped"]++
			continue
		}
		res.Concurrent++
		d := c.snapshot()
		u, _ := b.uas.CallStats(c.user)
		e, l := IntervalLoss(before[i].down, d)
		res.Down.Expected += e
		res.Down.Lost += l
		e, l = IntervalLoss(before[i].up, u)
		res.Up.Expected += e
		res.Up.Lost += l
		downJit = append(downJit, d.JitterMs)
		upJit = append(upJit, u.JitterMs)
		dd, rr := c.takeDelays()
		downDelay = append(downDelay, dd...)
		rtt = append(rtt, rr...)
		upDelay = append(upDelay, b.uas.TakeDelays(c.user)...)
	}
	for _, n := range res.FailedBy {
		res.Failed += n
	}
	res.WindowS = selfB.When.Sub(selfA.When).Seconds()
	if n := len(up); n > 0 && res.WindowS > 0 {
		res.SendRatePct = 100 * float64(sentB-sentA) / (float64(n) * 50 * res.WindowS)
	}
	fillDir(&res.Up, upJit, upDelay)
	fillDir(&res.Down, downJit, downDelay)
	res.RTTMs = Summarize(rtt)
	if len(rtt) == 0 {
		res.DelayNote = "n/a: the send-time marker travels inside the payload, and transcoding re-encodes it"
		if !sc.Echo {
			res.DelayNote = "trunk->browser n/a: the trunk sinks"
		}
	}
	res.LoadGen = procStats(0, CPUBetween(selfA, selfB), res.Concurrent)
	res.LoadGen.Measured = true
	res.LoadGen.MeasurementComment = "client and trunk UAS together"
	if clientErr == nil {
		res.LoadClient = procStats(0, CPUBetween(clientA, clientB), res.Concurrent)
		res.LoadClient.Measured = true
		res.LoadClient.MeasurementComment = "browser-side client: its engine threads (/proc/self/task), setup excluded"
	} else {
		res.LoadClient.MeasurementComment = clientErr.Error()
	}
	if t.pid > 0 && relayErr == nil {
		res.Relay = procStats(t.pid, CPUBetween(relayA, relayB), res.Concurrent)
		res.Relay.Measured = true
		res.Relay.RSSIdleBytes, res.Relay.RSSLoadedBytes = rssIdle, rssLoaded
		res.Relay.MemPerCallBytes = MemPerCall(rssIdle, rssLoaded, res.Concurrent)
	} else if relayErr != nil {
		res.Relay.MeasurementComment = relayErr.Error()
	} else {
		res.Relay.MeasurementComment = "relay pid unknown (use --spawn or --relay-pid)"
	}
	res.UnknownRTP = b.uas.Unknown()
	b.log.Debug("run done", "uas_unknown_rtp", res.UnknownRTP, "uas_invites", b.uas.Invites(), "sent", b.client.sent.Load(), "recv", b.client.recv.Load())

	// Hang up, a few at a time, like the ramp but faster.
	sem := make(chan struct{}, 32)
	for _, c := range all {
		if c == nil || !c.opened() {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := b.client.hangup(hctx, c); err != nil {
				b.log.Debug("hangup", "call", c.user, "err", err)
			}
			b.uas.Release(c.user)
		}()
	}
	wg.Wait()
	return res, nil
}

func fillDir(d *DirStats, jit, delay []float64) {
	if d.Expected > 0 {
		d.LossPct = 100 * float64(d.Lost) / float64(d.Expected)
	}
	var sum float64
	for _, j := range jit {
		sum += j
		d.JitterMaxMs = math.Max(d.JitterMaxMs, j)
	}
	if len(jit) > 0 {
		d.JitterMeanMs = sum / float64(len(jit))
	}
	d.DelayMs = Summarize(delay)
}

func procStats(pid int, w CPUWindow, calls int) ProcStats {
	ps := ProcStats{Pid: pid, CPUCores: w.Cores(), CPUUserMicros: w.UserMicros, CPUSysMicros: w.SysMicros}
	ps.CPUMicrosPerCallS = w.PerCallSecond(calls)
	ps.CallsPerCore = CallsPerCore(ps.CPUMicrosPerCallS)
	return ps
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// progress prints a live line every second until the returned func is called.
func (b *bench) progress(ctx context.Context, t target, phase string, n int, ok, failed *atomic.Int64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		lastSent, lastRecv := b.client.sent.Load(), b.client.recv.Load()
		var lastCPU CPUSample
		if t.pid > 0 {
			lastCPU, _ = ReadCPU(t.pid)
		}
		for {
			select {
			case <-stop:
				if b.tty {
					fmt.Fprint(b.stderr, "\r\033[K")
				}
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sent, recv := b.client.sent.Load(), b.client.recv.Load()
			cpu := "n/a"
			if t.pid > 0 {
				if s, err := ReadCPU(t.pid); err == nil {
					cpu = fmt.Sprintf("%.2f cores", CPUBetween(lastCPU, s).Cores())
					lastCPU = s
				}
			}
			line := fmt.Sprintf("[%s %s %3.0fs] calls up %d/%d failed %d | tx %d pps rx %d pps | relay cpu %s",
				t.name, phase, time.Since(start).Seconds(), ok.Load(), n, failed.Load(), sent-lastSent, recv-lastRecv, cpu)
			lastSent, lastRecv = sent, recv
			if b.tty {
				fmt.Fprint(b.stderr, "\r\033[K"+line)
			} else if int(time.Since(start).Seconds())%5 == 0 {
				fmt.Fprintln(b.stderr, line)
			}
		}
	}()
	return func() { close(stop); <-done }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// sortedKeys is for printing maps in a stable order.
func sortedKeys(m map[string]int) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
