package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit checks the shipped unit: the commands it runs exist, and
// the limits and hardening an operator relies on are there.
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("mediarelay.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not key=value in a section", n, line)
			}
			if _, dup := keys[section+"."+k]; dup && k != "ExecStartPre" {
				t.Errorf("line %d: %s set twice", n, k)
			}
			keys[section+"."+k] = v
		}
	}
	for k, want := range map[string]string{
		"Service.ExecStartPre":            "/usr/local/bin/mediarelay check-config /etc/mediarelay/mediarelay.yaml",
		"Service.ExecStart":               "/usr/local/bin/mediarelay serve --config /etc/mediarelay/mediarelay.yaml",
		"Service.ExecReload":              "/bin/kill -HUP $MAINPID",
		"Service.Restart":                 "on-failure",
		"Service.AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"Service.CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.DynamicUser":             "yes",
		"Service.LimitNOFILE":             "1048576",
		"Service.TimeoutStopSec":          "45s",
		"Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"Install.WantedBy":                "multi-user.target",
	} {
		if got := keys[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// The subcommands the unit runs are the ones main knows.
	var out, errb strings.Builder
	if code := run([]string{"check-config", "/nonexistent/mediarelay.yaml"}, &out, &errb); code != 1 {
		t.Errorf("check-config of a missing file: exit %d, %s", code, errb.String())
	}

	// systemd's own check, where it is installed, with the binary's path
	// pointed at one that exists.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit not verified by systemd")
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("mediarelay.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mediarelay.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mediarelay", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(res) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, res)
	}
}
