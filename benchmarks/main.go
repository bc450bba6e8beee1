package benchmarks

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Main is `mediarelay bench`: it parses args, runs the benchmark, prints a
// table to stdout (progress and logs go to stderr) and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mediarelay bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		wsURL       = fs.String("ws", "", "SIP-over-WebSocket URL of a running relay, e.g. ws://127.0.0.1:8080/ws (its default trunk must be --uas-listen)")
		relayPid    = fs.Int("relay-pid", 0, "pid of the relay behind --ws, to measure its CPU and memory")
		spawn       = fs.Bool("spawn", false, "start a mediarelay child with a config matching the scenario")
		control     = fs.String("control", "sip", "how --spawn's relay is driven: sip (browsers over WebSocket, the relay calls the trunk) or ng (rtpengine's control protocol, exactly as rtpengine is driven)")
		against     = fs.String("against", "", "also run the same load against another relay: rtpengine")
		scenarioF   = fs.String("scenario", "", "shorthand: pcmu, opus, transcode (opus<->PCMU), srtp (PCMU, SDES-SRTP trunk) or e2e (PCMU, DTLS-SRTP end to end between browser and trunk UAS; mediarelay over SIP only)")
		calls       = fs.Int("calls", 50, "concurrent calls")
		rate        = fs.Float64("rate", 20, "ramp rate, calls started per second")
		hold        = fs.Duration("hold", 20*time.Second, "steady window: how long all calls are held and measured after the ramp")
		settle      = fs.Duration("settle", 2*time.Second, "pause between the ramp and the window")
		codecF      = fs.String("codec", "pcmu", "browser codec: pcmu or opus")
		trunkMode   = fs.String("trunk-mode", "passthrough", "trunk media mode: passthrough, transcode or e2e")
		trunkSRTP   = fs.Bool("trunk-srtp", false, "SDES-SRTP on the trunk leg")
		uasMode     = fs.String("uas", "echo", "trunk UAS: echo or sink")
		uasListen   = fs.String("uas-listen", "127.0.0.1:0", "trunk UAS SIP address (UDP); fix it when the relay is not spawned")
		wsConns     = fs.Int("ws-conns", 4, "WebSocket connections the calls are spread over")
		ladder      = fs.String("ladder", "", "comma-separated call counts to step through, e.g. 50,100,200,400; stops at the knee")
		kneeLoss    = fs.Float64("knee-loss", 0.1, "loss percent (either direction) above which a ladder step is past the knee")
		kneeDelay   = fs.Float64("knee-delay", 100, "one-way delay p99 in ms (either direction, where measured) above which a ladder step is past the knee: a relay past its capacity that queues rather than drops loses nothing, but its delay grows; 0 turns the bound off")
		repeat      = fs.Int("repeat", 1, "runs of each step per relay, alternated between the relays (A B, then B A); the report gives each relay's median CPU per call-second and the spread (on a shared or virtual machine one run moves by 10-20 %)")
		jsonOut     = fs.String("json", "", "write results as JSON to this file")
		plotOut     = fs.String("plot", "", "write an SVG of CPU per call and delay against concurrent calls (for --ladder)")
		setupTmo    = fs.Duration("setup-timeout", 15*time.Second, "per-call limit for INVITE to first audio")
		verbose     = fs.Bool("v", false, "debug logging")
		relayLogOut = fs.String("relay-log", "", "file for the spawned relays' logs (default: discarded unless -v)")
		senders     = fs.Int("senders", 1, "load client engine threads (each sends and receives a fixed share of the calls' media)")
		sendSlots   = fs.Int("send-slots", 1, "instants of each 20 ms at which a load client thread sends, a call at one of them, up to 20: 1 sends every call's packet at once, as one clock for all; 10 spreads the calls over a 2 ms tick, as browsers with clocks of their own arrive spread")
		transportF  = fs.String("webrtc-transport", "udp", "how the browser legs reach the relay: udp, or tcp (ICE-TCP, RFC 6544: a TCP connection per call to the relay's passive candidate; mediarelay over SIP only)")
		relayCPUs   = fs.String("relay-cpus", "", "CPUs for the relays this run starts, e.g. 0 or 0-1; the load generator runs on the others. Each then has cores of its own, so a ladder's knee is the relay's rather than the machine's (on 2 cores the generator costs about what the relay does)")
		relayBin    = fs.String("relay-bin", "", "mediarelay binary for --spawn (default: this executable if it is mediarelay, else go build)")
		user        = fs.String("user", "", "answer the relay's digest challenges as this user (with --password); with --token-secret, the user every call's token names (default: one user per call)")
		password    = fs.String("password", "", "password for --user")
		tokenSecret = fs.String("token-secret", "", "the relay's sip.token_secret: mint time-limited credentials per call (--spawn sets a fresh one by default)")
	)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	lvl := slog.LevelInfo
	if *verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	sc, err := buildScenario(*scenarioF, *codecF, *trunkMode, *trunkSRTP, *uasMode)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	steps := []int{*calls}
	if *ladder != "" {
		steps = nil
		for _, f := range strings.Split(*ladder, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "bench: --ladder: bad step %q\n", f)
				return 2
			}
			steps = append(steps, n)
		}
	}
	if *wsURL == "" && !*spawn && *against == "" {
		fmt.Fprintln(stderr, "bench: nothing to measure: give --spawn, --ws URL, or --against rtpengine")
		return 2
	}
	if *control != "sip" && *control != "ng" {
		fmt.Fprintf(stderr, "bench: --control %q: sip or ng\n", *control)
		return 2
	}
	if *control == "ng" && !*spawn {
		fmt.Fprintln(stderr, "bench: --control ng needs --spawn")
		return 2
	}
	if *against != "" && *against != "rtpengine" {
		fmt.Fprintf(stderr, "bench: --against %q: only rtpengine is supported\n", *against)
		return 2
	}
	if sc.E2E {
		// rtpengine terminates the browser's DTLS as the bench drives it,
		// and ng carries no trunk answer for the relay to pass on.
		switch {
		case *against != "":
			fmt.Fprintf(stderr, "bench: e2e: the bench drives %s as a DTLS-terminating relay; drop --against\n", *against)
			return 2
		case *control != "sip":
			fmt.Fprintln(stderr, "bench: e2e needs --control sip (the relay passes the trunk's own fingerprint from its SIP answer)")
			return 2
		case sc.TrunkSRTP:
			fmt.Fprintln(stderr, "bench: e2e is DTLS-SRTP end to end: drop --trunk-srtp (SDES)")
			return 2
		}
	}
	transport, err := ParseTransport(*transportF)
	if err != nil {
		fmt.Fprintln(stderr, "bench: --webrtc-transport:", err)
		return 2
	}
	if transport == TransportTCP {
		// rtpengine has no ICE-TCP, and the ng path answers with the
		// relay's UDP candidates only: a "TCP" column there would be UDP.
		switch {
		case *against != "":
			fmt.Fprintf(stderr, "bench: --webrtc-transport tcp: %s has no ICE-TCP (RFC 6544) candidates; drop --against, or compare it over udp in a separate run\n", *against)
			return 2
		case *control != "sip":
			fmt.Fprintln(stderr, "bench: --webrtc-transport tcp needs --control sip (mediarelay's SIP-over-WebSocket path, whose answers carry its ICE-TCP candidates)")
			return 2
		case !*spawn && *wsURL == "":
			fmt.Fprintln(stderr, "bench: --webrtc-transport tcp needs --spawn (or --ws to a mediarelay with ICE-TCP on)")
			return 2
		}
	}
	if *rate <= 0 {
		fmt.Fprintln(stderr, "bench: --rate must be positive")
		return 2
	}

	var place *Placement
	if *relayCPUs != "" {
		if !*spawn && *against == "" {
			fmt.Fprintln(stderr, "bench: --relay-cpus places the relays this run starts: give --spawn or --against")
			return 2
		}
		if place, err = NewPlacement(*relayCPUs); err != nil {
			fmt.Fprintln(stderr, "bench: --relay-cpus:", err)
			return 2
		}
		// Before the client and UAS start their threads, which then
		// inherit the generator's CPUs.
		if err := place.PinSelf(); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		log.Info("cpu placement", "placement", place.String())
	}

	tmp, err := os.MkdirTemp("", "mediarelay-bench-")
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	uas, err := NewUAS(ctx, *uasListen, sc.Echo, log)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer uas.Close()
	if *sendSlots < 1 || *sendSlots > maxSendSlots {
		fmt.Fprintf(stderr, "bench: --send-slots: %d is not in 1..%d\n", *sendSlots, maxSendSlots)
		return 2
	}
	client, err := NewClient(sc.Codec, *senders, *sendSlots, transport, log)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer client.Close()

	var relayLog io.Writer = io.Discard
	if *verbose {
		relayLog = stderr
	}
	if *relayLogOut != "" {
		f, err := os.Create(*relayLogOut)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		relayLog = f
	}

	creds := Credentials{User: *user, Password: *password, TokenSecret: *tokenSecret}
	var targets []target
	switch {
	case *spawn:
		if creds.TokenSecret == "" && creds.User == "" {
			creds.TokenSecret = randToken(16)
		}
		rp, err := spawnRelay(ctx, log, relayLog, *relayBin, sc, uas.SIPAddr(), tmp, creds, *control == "ng", place)
		if err != nil {
			fmt.Fprintln(stderr, "bench: spawn relay:", err)
			return 1
		}
		defer rp.Stop()
		log.Info("relay started", "pid", rp.Pid(), "ws", rp.ws, "ng", rp.ng)
		if *control == "ng" {
			targets = append(targets, ngTarget("mediarelay (ng)", rp.Pid(), rp.ng, sc, uas, log))
		} else {
			targets = append(targets, wsTarget("mediarelay", rp.ws, rp.Pid(), *wsConns, creds, log))
		}
	case *wsURL != "":
		log.Info("targeting a running relay; its default trunk must be the bench UAS", "ws", *wsURL, "uas", uas.SIPAddr())
		targets = append(targets, wsTarget("mediarelay", *wsURL, *relayPid, *wsConns, creds, log))
	}
	if *against == "rtpengine" {
		t, stop, err := rtpengineTarget(ctx, log, relayLog, sc, uas, place)
		if err != nil {
			fmt.Fprintln(stderr, "bench: rtpengine:", err)
			return 1
		}
		defer stop()
		targets = append(targets, t)
	}

	b := &bench{uas: uas, client: client, log: log, stderr: stderr, tty: isTerminal(stderr)}
	params := RunParams{Rate: *rate, Hold: *hold, Settle: *settle, SetupTimeout: *setupTmo}
	report := &Report{Machine: machineInfo(), Placement: place.describe(), Scenario: sc, Transport: transport, Started: time.Now().UTC(), KneeLossPct: *kneeLoss, KneeDelayMs: *kneeDelay}
	limits := report.Limits()
	if *repeat < 1 {
		fmt.Fprintln(stderr, "bench: --repeat must be at least 1")
		return 2
	}
	failed := false
	// Step by step, each relay in turn: runs of the relays at one step are
	// minutes apart at most, so a drift of the host moves them alike.
	ladders := make([]TargetLadder, len(targets))
	stopped := make([]bool, len(targets)) // errored, unsupported or past the knee
	for i, t := range targets {
		ladders[i].Target = t.name
	}
	for _, n := range steps {
		params.Calls = n
		runs := make([][]*Result, len(targets))
		for rep := range *repeat {
			for _, i := range runOrder(len(targets), rep) {
				if stopped[i] || ctx.Err() != nil {
					continue
				}
				t := targets[i]
				log.Info("run", "target", t.name, "scenario", sc.Name, "calls", n, "repeat", rep+1)
				res, err := b.run(ctx, t, sc, params)
				if err != nil {
					fmt.Fprintf(stderr, "bench: %s with %d calls: %v\n", t.name, n, err)
					failed, stopped[i] = true, true
					continue
				}
				runs[i] = append(runs[i], res)
				if res.Unsupported != "" {
					stopped[i] = true
				}
				_ = sleepCtx(ctx, time.Second)
			}
		}
		for i := range targets {
			if len(runs[i]) == 0 {
				continue
			}
			res := medianRun(runs[i], limits)
			tr := &ladders[i]
			tr.Steps = append(tr.Steps, res)
			switch {
			case res.Unsupported != "":
				stopped[i] = true
			case res.Clean(limits):
				tr.Knee = n
			default:
				tr.PastKnee = n
				if len(steps) > 1 {
					stopped[i] = true
				}
			}
		}
	}
	report.Targets = ladders
	report.Finished = time.Now().UTC()
	report.WriteTable(stdout)
	if *jsonOut != "" {
		data, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(*jsonOut, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench: --json:", err)
			return 1
		}
	}
	if *plotOut != "" {
		if err := os.WriteFile(*plotOut, []byte(report.SVG()), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench: --plot:", err)
			return 1
		}
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	for _, t := range report.Targets {
		for _, r := range t.Steps {
			if r.Unsupported == "" && len(steps) == 1 && !r.Clean(limits) {
				return 1 // a single run that failed calls or lost audio
			}
		}
	}
	return 0
}

// buildScenario turns flags (or a --scenario shorthand) into a Scenario.
func buildScenario(short, codec, mode string, srtp bool, uas string) (Scenario, error) {
	switch short {
	case "":
	case "pcmu":
		codec, mode, srtp = "pcmu", "passthrough", false
	case "opus":
		codec, mode, srtp = "opus", "passthrough", false
	case "transcode":
		codec, mode, srtp = "opus", "transcode", false
	case "srtp":
		codec, mode, srtp = "pcmu", "passthrough", true
	case "e2e":
		codec, mode, srtp = "pcmu", "e2e", false
	default:
		return Scenario{}, fmt.Errorf("unknown --scenario %q (pcmu, opus, transcode, srtp, e2e)", short)
	}
	c, err := ParseCodec(codec)
	if err != nil {
		return Scenario{}, err
	}
	sc := Scenario{Codec: c, CodecName: c.Name, TrunkSRTP: srtp}
	switch mode {
	case "passthrough":
		sc.TrunkCodec = c.Name
	case "e2e":
		sc.TrunkCodec, sc.E2E = c.Name, true
	case "transcode":
		sc.TrunkCodec = "PCMU"
		if c.Name == "PCMU" {
			sc.TrunkCodec = "opus"
		}
	default:
		return Scenario{}, fmt.Errorf("unknown --trunk-mode %q (passthrough, transcode, e2e)", mode)
	}
	switch uas {
	case "echo":
		sc.Echo = true
	case "sink":
	default:
		return Scenario{}, fmt.Errorf("unknown --uas %q (echo, sink)", uas)
	}
	sc.Name = c.Name + " passthrough"
	if sc.Transcode() {
		sc.Name = c.Name + "<->" + sc.TrunkCodec + " transcode"
	}
	switch {
	case sc.E2E:
		sc.Name = c.Name + " end to end (e2e: the browser's DTLS-SRTP is with the trunk, relayed opaquely)"
	case srtp:
		sc.Name += ", SDES-SRTP trunk"
	default:
		sc.Name += ", RTP trunk"
	}
	return sc, nil
}

func wsTarget(name, url string, pid, conns int, creds Credentials, log *slog.Logger) target {
	return target{name: name, pid: pid, api: callAPIURL(url), newSig: func(ctx context.Context, onBye func(string)) (signaler, error) {
		return newSipSignaler(ctx, url, conns, creds, log, onBye)
	}}
}

func rtpengineTarget(ctx context.Context, log *slog.Logger, out io.Writer, sc Scenario, uas *UAS, place *Placement) (target, func(), error) {
	portMin := 40000 + 2*int(randUint32()%2000)
	p, err := startRtpengine(ctx, log, out, portMin, portMin+5999, place)
	if err != nil {
		return target{}, nil, err
	}
	log.Info("rtpengine started", "pid", p.Pid(), "ng", p.ngAddr)
	return ngTarget("rtpengine", p.Pid(), p.ngAddr, sc, uas, log), p.Stop, nil
}

// ngTarget is a relay driven over rtpengine's ng protocol at addr, the
// way a SIP proxy drives it (ngSignaler): rtpengine, or mediarelay with
// --control ng, on the same control path.
func ngTarget(name string, pid int, addr string, sc Scenario, uas *UAS, log *slog.Logger) target {
	return target{name: name, pid: pid, newSig: func(ctx context.Context, _ func(string)) (signaler, error) {
		ng, err := newNGClient(addr)
		if err != nil {
			return nil, err
		}
		return &ngSignaler{ng: ng, uas: uas, sc: sc, log: log}, nil
	}}
}

// runOrder is the order the relays run in on repeat rep: as given, then
// reversed, so that over two repeats each relay runs first once.
func runOrder(n, rep int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
		if rep%2 == 1 {
			order[i] = n - 1 - i
		}
	}
	return order
}

// medianRun is what the report shows for one relay at one step: its only
// run, or of several the one with the median CPU per call-second (the
// lower of the middle two), carrying every run's figure in CPURuns, and
// the first run's memory. A step is as clean as its worst run: if one was
// past the knee, that run is the step's result.
func medianRun(runs []*Result, k KneeLimits) *Result {
	if len(runs) == 1 {
		return runs[0]
	}
	cpu := make([]float64, len(runs))
	for i, r := range runs {
		cpu[i] = r.Relay.CPUMicrosPerCallS
	}
	pick := runs[0]
	if bad := slices.IndexFunc(runs, func(r *Result) bool { return !r.Clean(k) }); bad >= 0 {
		pick = runs[bad]
	} else {
		sorted := slices.Clone(runs)
		slices.SortFunc(sorted, func(a, b *Result) int { return cmp.Compare(a.Relay.CPUMicrosPerCallS, b.Relay.CPUMicrosPerCallS) })
		pick = sorted[(len(sorted)-1)/2]
	}
	pick.CPURuns = cpu
	// Memory is the first run's: later runs start from what earlier ones
	// left in the heap, so their idle figure is no baseline.
	first := runs[0].Relay
	pick.Relay.RSSIdleBytes, pick.Relay.RSSLoadedBytes, pick.Relay.MemPerCallBytes = first.RSSIdleBytes, first.RSSLoadedBytes, first.MemPerCallBytes
	return pick
}
