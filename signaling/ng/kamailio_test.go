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
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kamailio is not installed (.ci/deps installs it)")
		}
		t.Skip("kamailio is not installed (.ci/deps installs it)")
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
