// Command mediarelay is a media relay B2BUA between WebRTC browsers and SIP
// trunks. Subcommands: serve, bench, version, check-config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mediarelay/mediarelay/benchmarks"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 || os.Args[1] == "serve" || os.Args[1] == "bench" || strings.HasPrefix(os.Args[1], "-") {
		// serve, and bench's load generator, which runs as long and whose
		// CPU per call-second is measured beside the relay's; the other
		// commands are short-lived.
		tuneRuntime()
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "check-config":
		if len(args) != 1 {
			fmt.Fprintln(stderr, "usage: mediarelay check-config FILE")
			return 2
		}
		if _, err := config.LoadFile(args[0]); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", args[0], err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[0])
		return 0
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return benchmarks.Main(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "mediarelay %s\n", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: mediarelay [serve|bench|version|check-config FILE] [flags]")
		return 0
	}
	fmt.Fprintf(stderr, "mediarelay: unknown command %q (serve, bench, version, check-config)\n", cmd)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	cfg, err := config.Load(args, os.Environ())
	if errors.Is(err, flag.ErrHelp) {
		config.Usage(stderr)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "mediarelay: %v\n", err)
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	raiseFileLimit(log)
	tuneGC()
	relay, err := signaling.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	term := make(chan os.Signal, 2)
	signal.Notify(term, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(term)
	go stopOnSignal(term, relay, stop, log)
	if cfg.Debug.PprofListen != "" {
		srv, err := servePprof(cfg.Debug.PprofListen, log)
		if err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		defer srv.Close()
	}
	// SIGHUP re-reads certificates without dropping calls.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := relay.ReloadTLS(); err != nil {
				log.Error("certificate reload failed; keeping the old ones", "err", err)
			} else {
				log.Info("certificates reloaded")
			}
		}
	}()
	// SIGUSR1 drains the node: no new calls, the others go on.
	usr1 := make(chan os.Signal, 1)
	notifyDrain(usr1) // SIGUSR1 where the platform has it
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			relay.Drain()
		}
	}()
	if err := relay.Serve(ctx); err != nil {
		log.Error("relay stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
