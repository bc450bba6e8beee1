package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "mediarelay ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("media:\n  port_min: 30000\n  port_max: 30999\ntrunks:\n  - name: c\n    address: sip:127.0.0.1:5070\n"), 0o600)
	os.WriteFile(bad, []byte("media:\n  prot_min: 30000\n"), 0o600)
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", good}, &out, &errOut); code != 0 {
		t.Fatalf("good config refused: %s", errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"check-config", bad}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "media.prot_min") {
		t.Fatalf("bad config: code %d, message %q does not name the key", code, errOut.String())
	}
}

func TestServeRejectsBadValue(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"serve", "--media-port-min", "70000"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "media.port_min") {
		t.Fatalf("serve with a bad port: code %d, message %q", code, errOut.String())
	}
	errOut.Reset()
	t.Setenv("MEDIARELAY_MEDIA_TIMEOUT", "soon")
	code = run([]string{"serve"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "media.timeout") && !strings.Contains(errOut.String(), "MEDIARELAY_MEDIA_TIMEOUT") {
		t.Fatalf("serve with a bad env duration: code %d, message %q", code, errOut.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &out); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}
