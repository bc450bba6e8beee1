package benchmarks

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one `mediarelay bench` invocation measured.
type Report struct {
	Machine Machine `json:"machine"`
	// Placement is where --relay-cpus put the relay and the load
	// generator; empty when the OS placed them.
	Placement string   `json:"placement,omitempty"`
	Scenario  Scenario `json:"scenario"`
	// Transport is how the browser legs reached the relay: udp, or tcp
	// (ICE-TCP).
	Transport   Transport      `json:"browser_transport"`
	Started     time.Time      `json:"started"`
	Finished    time.Time      `json:"finished"`
	KneeLossPct float64        `json:"knee_loss_pct"`
	KneeDelayMs float64        `json:"knee_delay_p99_ms,omitempty"`
	Targets     []TargetLadder `json:"targets"`
}

// TargetLadder is one relay's runs, one per ladder step.
type TargetLadder struct {
	Target string    `json:"target"`
	Steps  []*Result `json:"steps"`
	// Knee is the largest step with no failed calls and loss within the
	// threshold; PastKnee the first step that was not (0: none reached).
	Knee     int `json:"knee_calls"`
	PastKnee int `json:"past_knee_calls,omitempty"`
}

// Machine describes where the numbers were taken.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

func machineInfo() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func fmtDist(d Dist) string {
	if d.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f", d.P50, d.P95, d.P99)
}

func fmtMs(v float64, n int) string {
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func fmtLoss(d DirStats) string {
	return fmt.Sprintf("%.3f%% (%d/%d)", d.LossPct, d.Lost, d.Expected)
}

// WriteTable prints, for every ladder step, the metrics of each relay side
// by side, then the ladder summary with the knee.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\nScenario: %s, trunk UAS %s\n", r.Scenario.Name, map[bool]string{true: "echo", false: "sink"}[r.Scenario.Echo])
	fmt.Fprintf(w, "Browser legs: %s\n", transportName(r.Transport))
	fmt.Fprintf(w, "Machine: %s, %d cores, Linux %s, %s\n", r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Machine.Go)
	if r.Placement != "" {
		fmt.Fprintf(w, "Placement: %s\n", r.Placement)
	}
	steps := map[int][]*Result{}
	var order []int
	for _, t := range r.Targets {
		for _, s := range t.Steps {
			if _, ok := steps[s.Calls]; !ok {
				order = append(order, s.Calls)
			}
			steps[s.Calls] = append(steps[s.Calls], s)
		}
	}
	for _, n := range order {
		rs := steps[n]
		fmt.Fprintf(w, "\n== %d calls ==\n", n)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(name string, f func(*Result) string) {
			cells := []string{name}
			for _, x := range rs {
				if x.Unsupported != "" {
					cells = append(cells, "-")
					continue
				}
				cells = append(cells, f(x))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		hdr := []string{"metric"}
		for _, x := range rs {
			hdr = append(hdr, x.Target)
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		unsupported := false
		for _, x := range rs {
			if x.Unsupported != "" {
				unsupported = true
			}
		}
		if unsupported {
			cells := []string{"supported"}
			for _, x := range rs {
				if x.Unsupported != "" {
					cells = append(cells, "NOT SUPPORTED: "+x.Unsupported)
				} else {
					cells = append(cells, "yes")
				}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		row("browser leg transport: client / as the relay reports it", func(x *Result) string {
			seen := "n/a"
			switch {
			case x.RelayLegTransportsErr != "":
				seen = "n/a (call API: " + x.RelayLegTransportsErr + ")"
			case len(x.RelayLegTransports) > 0:
				var p []string
				for _, k := range sortedKeys(x.RelayLegTransports) {
					p = append(p, fmt.Sprintf("%s:%d", k, x.RelayLegTransports[k]))
				}
				seen = strings.Join(p, " ")
			}
			return string(x.BrowserTransport) + " / " + seen
		})
		row("media mode as the relay reports it", func(x *Result) string {
			if len(x.RelayModes) == 0 {
				return "n/a"
			}
			var p []string
			for _, k := range sortedKeys(x.RelayModes) {
				p = append(p, fmt.Sprintf("%s:%d", k, x.RelayModes[k]))
			}
			return strings.Join(p, " ")
		})
		if r.Scenario.E2E {
			row("trunk UAS DTLS handshakes with browsers (e2e)", func(x *Result) string { return fmt.Sprint(x.UASDTLSHandshakes) })
		}
		row("calls attempted/established/failed", func(x *Result) string {
			return fmt.Sprintf("%d / %d / %d", x.Attempted, x.Established, x.Failed)
		})
		row("failed by cause", func(x *Result) string {
			if len(x.FailedBy) == 0 {
				return "-"
			}
			var p []string
			for _, k := range sortedKeys(x.FailedBy) {
				p = append(p, fmt.Sprintf("%s:%d", k, x.FailedBy[k]))
			}
			return strings.Join(p, " ")
		})
		row("concurrent in window / window s", func(x *Result) string { return fmt.Sprintf("%d / %.1f", x.Concurrent, x.WindowS) })
		row("setup INVITE->200 ms p50/p95/p99", func(x *Result) string { return fmtDist(x.SetupMs) })
		row("setup INVITE->first audio ms p50/p95/p99", func(x *Result) string { return fmtDist(x.FirstAudioMs) })
		row("loss browser->trunk", func(x *Result) string { return fmtLoss(x.Up) })
		row("loss trunk->browser", func(x *Result) string { return fmtLoss(x.Down) })
		row("jitter browser->trunk ms mean/max", func(x *Result) string { return fmt.Sprintf("%.2f / %.2f", x.Up.JitterMeanMs, x.Up.JitterMaxMs) })
		row("jitter trunk->browser ms mean/max", func(x *Result) string {
			return fmt.Sprintf("%.2f / %.2f", x.Down.JitterMeanMs, x.Down.JitterMaxMs)
		})
		row("delay browser->trunk ms p50/p95/p99", func(x *Result) string { return fmtDist(x.Up.DelayMs) })
		row("delay trunk->browser ms p50/p95/p99", func(x *Result) string { return fmtDist(x.Down.DelayMs) })
		row("echo round trip ms p50/p95/p99", func(x *Result) string { return fmtDist(x.RTTMs) })
		row("relay CPU cores (user+sys)", func(x *Result) string {
			if !x.Relay.Measured {
				return "n/a"
			}
			return fmt.Sprintf("%.3f (%.1f+%.1f s)", x.Relay.CPUCores, x.Relay.CPUUserMicros/1e6, x.Relay.CPUSysMicros/1e6)
		})
		row("relay CPU-µs per call-second", func(x *Result) string {
			if !x.Relay.Measured {
				return "n/a"
			}
			if len(x.CPURuns) > 1 {
				return fmt.Sprintf("%.0f (median of %d: %.0f–%.0f)", x.Relay.CPUMicrosPerCallS, len(x.CPURuns), slices.Min(x.CPURuns), slices.Max(x.CPURuns))
			}
			return fmt.Sprintf("%.0f", x.Relay.CPUMicrosPerCallS)
		})
		row("relay calls per core (implied)", func(x *Result) string {
			if !x.Relay.Measured {
				return "n/a"
			}
			return fmt.Sprintf("%.0f", x.Relay.CallsPerCore)
		})
		row("relay RSS idle -> loaded MB, per call KB", func(x *Result) string {
			if !x.Relay.Measured {
				return "n/a"
			}
			return fmt.Sprintf("%.1f -> %.1f, %.0f", float64(x.Relay.RSSIdleBytes)/(1<<20), float64(x.Relay.RSSLoadedBytes)/(1<<20), x.Relay.MemPerCallBytes/1024)
		})
		row("load generator CPU cores, µs per call-s", func(x *Result) string {
			return fmt.Sprintf("%.3f, %.0f", x.LoadGen.CPUCores, x.LoadGen.CPUMicrosPerCallS)
		})
		row("load client (browser side) CPU-µs per call-s, × relay", func(x *Result) string {
			if !x.LoadClient.Measured {
				return "n/a"
			}
			s := fmt.Sprintf("%.0f", x.LoadClient.CPUMicrosPerCallS)
			if x.Relay.Measured && x.Relay.CPUMicrosPerCallS > 0 {
				s += fmt.Sprintf(", %.2f×", x.LoadClient.CPUMicrosPerCallS/x.Relay.CPUMicrosPerCallS)
			}
			return s
		})
		row("load generator send rate (% of 50 pps/call)", func(x *Result) string {
			s := fmt.Sprintf("%.1f%%", x.SendRatePct)
			if x.LoadGenLimited() {
				s += " LIMITED BY LOAD GENERATOR"
			}
			return s
		})
		row("UDP rcvbuf drops relay / load generator", func(x *Result) string {
			return fmt.Sprintf("%d / %d", x.RelayUDPDrops, x.LoadGenUDPDrops)
		})
		tw.Flush()
		if ratio := cpuRatio(rs, r.Limits()); ratio != "" {
			fmt.Fprintln(w, ratio)
		}
		for _, x := range rs {
			if x.DelayNote != "" {
				fmt.Fprintf(w, "note (%s): delay %s\n", x.Target, x.DelayNote)
			}
		}
	}
	if len(order) > 1 {
		delay := ""
		if r.KneeDelayMs > 0 {
			delay = fmt.Sprintf(", one-way delay p99 <= %.0f ms", r.KneeDelayMs)
		}
		fmt.Fprintf(w, "\n== ladder (knee: largest step with 0 failed calls, loss and relay rcvbuf drops <= %.2f%%%s) ==\n", r.KneeLossPct, delay)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "target\tcalls\tfailed\tloss up/down %\tsetup p95 ms\tdelay up p50 ms\trelay µs/call-s\tcalls/core\tloadgen µs/call-s\tclient µs/call-s\tsend rate %\trelay drops")
		for _, t := range r.Targets {
			for _, x := range t.Steps {
				if x.Unsupported != "" {
					fmt.Fprintf(tw, "%s\t%d\tnot supported: %s\n", t.Target, x.Calls, x.Unsupported)
					continue
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f / %.3f\t%.1f\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%d\n", t.Target, x.Calls, x.Failed, x.Up.LossPct, x.Down.LossPct,
					x.SetupMs.P95, fmtMs(x.Up.DelayMs.P50, x.Up.DelayMs.N), x.Relay.CPUMicrosPerCallS, x.Relay.CallsPerCore, x.LoadGen.CPUMicrosPerCallS, x.LoadClient.CPUMicrosPerCallS, x.SendRatePct, x.RelayUDPDrops)
			}
		}
		tw.Flush()
		for _, t := range r.Targets {
			switch {
			case t.PastKnee > 0 && t.Knee > 0:
				why := ""
				for _, x := range t.Steps {
					if x.Calls == t.PastKnee && x.LoadGenLimited() && x.relayKeptUp(r.Limits()) {
						why = " (the load generator could not keep its send rate there: the relay's own limit is higher)"
					}
				}
				fmt.Fprintf(w, "knee %s: clean at %d calls, not at %d%s\n", t.Target, t.Knee, t.PastKnee, why)
			case t.PastKnee > 0:
				fmt.Fprintf(w, "knee %s: below %d calls (the first step already failed or lost audio)\n", t.Target, t.PastKnee)
			case t.Knee > 0:
				fmt.Fprintf(w, "knee %s: not reached; clean up to %d calls\n", t.Target, t.Knee)
			}
		}
	}
}

// transportName describes the browser legs' transport for the report.
func transportName(t Transport) string {
	if t == TransportTCP {
		return "ICE-TCP (RFC 6544: a TCP connection per call to the relay's passive candidate, RFC 4571 framing)"
	}
	return "UDP (a socket per call)"
}

// cpuRatio compares mediarelay's CPU per call-second with rtpengine's.
// A relay past its knee at the step (failed calls, loss or drops beyond
// maxLossPct) spent its CPU on the part of the work it did, so the ratio
// would flatter it: the line then says so instead of giving one.
// Limits is the report's knee criteria.
func (r *Report) Limits() KneeLimits {
	return KneeLimits{LossPct: r.KneeLossPct, DelayMs: r.KneeDelayMs}
}

func cpuRatio(rs []*Result, k KneeLimits) string {
	var mr, re *Result
	for _, x := range rs {
		if x.Unsupported != "" || !x.Relay.Measured || x.Relay.CPUMicrosPerCallS <= 0 {
			continue
		}
		switch {
		case strings.HasPrefix(x.Target, "mediarelay"): // "mediarelay (ng)" with --control ng
			mr = x
		case x.Target == "rtpengine":
			re = x
		}
	}
	if mr == nil || re == nil {
		return ""
	}
	for _, x := range []*Result{mr, re} {
		if !x.Clean(k) {
			return fmt.Sprintf("CPU per call-second: no ratio at this step: %s was past its knee (failed calls, loss or drops above %.2f%%, or delay p99 above %.0f ms), so its CPU covers only the work it did", x.Target, k.LossPct, k.DelayMs)
		}
	}
	line := fmt.Sprintf("CPU per call-second, %s / rtpengine = %.2f", mr.Target, mr.Relay.CPUMicrosPerCallS/re.Relay.CPUMicrosPerCallS)
	if n := min(len(mr.CPURuns), len(re.CPURuns)); n > 1 {
		pairs := make([]float64, n)
		for i := range pairs {
			pairs[i] = mr.CPURuns[i] / re.CPURuns[i]
		}
		line += fmt.Sprintf(" (medians of %d alternated runs each; run by run %.2f–%.2f)", n, slices.Min(pairs), slices.Max(pairs))
	}
	return line
}
