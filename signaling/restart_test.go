package signaling

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
)

// childRelayEnv makes the test binary run a relay from the config file it
// names (see runChildRelay), so a test can kill -9 a relay process.
const childRelayEnv = "MR_SIGNALING_CHILD_RELAY"

// runChildRelay serves the relay configured in path until SIGTERM and
// prints "READY <http address>" once listening.
func runChildRelay(path string) int {
	cfg, err := config.LoadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := New(cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-r.Ready()
		fmt.Printf("READY %s\n", r.HTTPAddr())
	}()
	if err := r.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChildRelay runs a relay process from cfgPath and returns it and its
// HTTP address.
func startChildRelay(t *testing.T, cfgPath string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRelayEnv+"="+cfgPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- a
			}
		}
	}()
	select {
	case a := <-ready:
		return cmd, a
	case <-time.After(30 * time.Second):
		t.Fatal("child relay did not start")
		return nil, ""
	}
}

// TestKill9MidCallRelayRestart: a relay killed with SIGKILL during an
// answered call leaves that call's CDR row, which the next start closes
// with cause relay_restart.
func TestKill9MidCallRelayRestart(t *testing.T) {
	u := newTrunkUAS(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "cdr.db")
	lo, hi := nextPortRange()
	cfg := fmt.Sprintf("http:\n  listen: 127.0.0.1:0\nsip:\n  udp_listen: 127.0.0.1:0\n  tcp_listen: ''\n  anonymous_calls: true\n"+
		"media:\n  bind_ip: 127.0.0.1\n  port_min: %d\n  port_max: %d\n  webrtc_port: %d\ncdr:\n  path: %s\nlog:\n  level: error\n"+
		"trunks:\n  - name: carrier\n    match: '.*'\n    address: sip:%s\n    codecs: [PCMU]\n", lo, hi, freeUDPPort(t), db, u.addr)
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	child, addr := startChildRelay(t, cfgPath)
	p := newPhone(t, "PCMU")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := p.inviteAddr(ctx, addr, "+15551234567", []byte(p.offer()))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("call through the child relay: %v %v", res, err)
	}
	callID := res.CallID().Value()
	waitChan(t, "the trunk to answer", u.answered)
	sqlDB, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	waitFor(t, "the answered call's row in the database", 10*time.Second, func() bool {
		var n int
		return sqlDB.QueryRow(`SELECT count(*) FROM cdr WHERE end_cause = ?`, cdr.CauseInProgress).Scan(&n) == nil && n == 1
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	second, _ := startChildRelay(t, cfgPath) // closes rows left in progress
	_ = second.Process.Signal(syscall.SIGTERM)
	_ = second.Wait()
	store, err := cdr.Open(db)
	if err != nil {
		t.Fatalf("CDR database after kill -9: %v", err)
	}
	defer store.Close()
	n, err := store.Count(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("rows after kill -9 and restart: %d, %v", n, err)
	}
	var cause, browserCallID string
	if err := sqlDB.QueryRow(`SELECT end_cause, browser_call_id FROM cdr`).Scan(&cause, &browserCallID); err != nil {
		t.Fatal(err)
	}
	if cause != cdr.CauseRelayRestart || browserCallID != callID {
		t.Fatalf("the killed call's row: cause %q, call %q (want %q)", cause, browserCallID, callID)
	}
}
