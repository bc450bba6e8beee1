package ng

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKamailioExampleConfig: the example deployment's configuration is one
// Debian's Kamailio 5.6 accepts (kamailio -c parses it and loads every
// module it names, the WebSocket one included).
func TestKamailioExampleConfig(t *testing.T) {
	bin, err := exec.LookPath("kamailio")
	ws, _ := filepath.Glob("/usr/lib/*/kamailio/modules/websocket.so")
	if err != nil || len(ws) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("kamailio or kamailio-websocket-modules is not installed (.ci/deps installs them)")
		}
		t.Skip("kamailio or kamailio-websocket-modules is not installed (.ci/deps installs them)")
	}
	cfg, err := filepath.Abs("kamailio.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", "-f", cfg)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config file ok") {
		t.Fatalf("kamailio -c: %v\n%s", err, out)
	}
}
