package signaling

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/web/browsertest"
)

// jssipDir holds the JsSIP test page (its package.json pins JsSIP and esbuild).
const jssipDir = "web/jssip"

// ensureJsSIP installs the page's npm packages when they are missing; it
// runs before the test enters its network namespace.
func ensureJsSIP(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(jssipDir, "node_modules", "jssip", "package.json")); err == nil {
		return
	}
	if _, err := os.Stat(filepath.Join(jssipDir, "node_modules", ".bin", "esbuild")); err == nil {
		return
	}
	if os.Getenv(browsertestNetnsEnv) != "" {
		return // the child has no network; the parent installed
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm not installed: run .ci/deps")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-save")
	cmd.Dir = jssipDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install in %s: %v\n%s", jssipDir, err, out)
	}
}

// browsertestNetnsEnv is set in the re-executed test binary (browsertest's netnsEnv).
const browsertestNetnsEnv = "MEDIARELAY_BROWSERTEST_NETNS"

// TestJsSIPAnswersSIPp: a page running JsSIP (bundled with esbuild from
// npm) registers with the relay over WebSocket and answers a call SIPp
// places through the relay; the tones SIPp plays are detected in the page.
// JsSIP knows only MD5 and keeps the last WWW-Authenticate of a 401,
// which the relay's default order (SHA-256, then MD5) makes the MD5 one.
func TestJsSIPAnswersSIPp(t *testing.T) {
	ensureJsSIP(t)
	if !browsertest.InNetns(t) {
		return
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(bundlePage(t, jssipEsbuild, jssipDir))))
	defer srv.Close()
	browserAnswersSIPp(t, func(r *Relay) string {
		return srv.URL + "/index.html?ws=ws://" + r.HTTPAddr().String() + "/ws"
	}, func(c *config.Config) { c.HTTP.AllowedOrigins = []string{srv.URL} }) // the page is served from elsewhere
}

// jssipEsbuild is the esbuild that the JsSIP page's package.json installs.
var jssipEsbuild = filepath.Join(jssipDir, "node_modules", ".bin", "esbuild")

// bundlePage builds a test page for a third-party SIP stack: esbuild
// bundles dir/page.js (and what it imports) into bundle.js beside a copy
// of dir/index.html, in a fresh directory that it returns.
func bundlePage(t *testing.T, esbuild, dir string) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(esbuild, filepath.Join(dir, "page.js"), "--bundle", "--format=iife", "--log-level=warning",
		"--outfile="+filepath.Join(out, "bundle.js"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("esbuild %s: %v\n%s", dir, err, b)
	}
	html, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "index.html"), html, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
