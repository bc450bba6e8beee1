package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpawnRelayExitsAtStart: a relay that exits before it is healthy is
// tried again, and the error says what it printed; a tail writer keeps
// only the last bytes.
func TestSpawnRelayExitsAtStart(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-relay")
	script := "#!/bin/sh\necho try >> " + filepath.Join(dir, "tries") + "\necho 'listen tcp: bind: address already in use' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sc, err := buildScenario("pcmu", "", "", false, "echo")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err = spawnRelay(context.Background(), log, io.Discard, bin, sc, "127.0.0.1:5060", dir, Credentials{}, false, nil)
	if !errors.Is(err, errExitedAtStart) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %v, want an exit at start with what the relay said", err)
	}
	if tries, _ := os.ReadFile(filepath.Join(dir, "tries")); strings.Count(string(tries), "try") != 3 {
		t.Errorf("relay started %d times, want 3", strings.Count(string(tries), "try"))
	}

	w := &tailWriter{max: 4}
	fmt.Fprint(w, "abc")
	fmt.Fprint(w, "defg")
	if w.String() != "defg" {
		t.Errorf("tail %q, want %q", w.String(), "defg")
	}
}
