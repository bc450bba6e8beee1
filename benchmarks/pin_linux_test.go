//go:build linux

package benchmarks

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	good := map[string][]int{"0": {0}, "1-3": {1, 2, 3}, "0, 2-3": {0, 2, 3}}
	for in, want := range good {
		got, err := parseCPUList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "3-1", "a", "0-", "1,,2", "0-100000", "99999999999999999999"} {
		if got, err := parseCPUList(in); err == nil {
			t.Errorf("parseCPUList(%q) = %v, want an error", in, got)
		}
	}
}

// The relay starts on its CPUs from its first instruction, and the thread
// that forked it goes back to where it was.
func TestPlacementStartsRelayOnItsCPUs(t *testing.T) {
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	if mine.Count() < 2 {
		// A placement needs a CPU for each side; NewPlacement refuses
		// with one, which the refusal cases below still check.
		t.Skip("needs two CPUs to place the relay and the load generator apart")
	}
	first := -1
	for c := range 1024 {
		if mine.IsSet(c) {
			first = c
			break
		}
	}
	p, err := NewPlacement(itoa(first))
	if err != nil {
		t.Fatal(err)
	}
	if p.RelayCPUs() != 1 || p.load.IsSet(first) || p.load.Count() != mine.Count()-1 {
		t.Fatalf("placement %s from %d CPUs", p, mine.Count())
	}
	cmd := exec.Command("sh", "-c", "grep Cpus_allowed_list /proc/self/status")
	var out strings.Builder
	cmd.Stdout = &out
	if err := p.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out.String()), "Cpus_allowed_list:")); got != itoa(first) {
		t.Fatalf("the relay may run on CPUs %q, want %d", got, first)
	}
	// Every thread of ours still has all it had.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(atoi(tk.Name()), &s); err == nil && s != mine {
			t.Fatalf("thread %s left with %d CPUs, want %d", tk.Name(), s.Count(), mine.Count())
		}
	}

	// Refused: a CPU we may not use, and taking them all.
	if _, err := NewPlacement("1023"); err == nil {
		t.Error("a CPU outside the affinity was accepted")
	}
	all := ""
	for c := range 1024 {
		if mine.IsSet(c) {
			if all != "" {
				all += ","
			}
			all += itoa(c)
		}
	}
	if _, err := NewPlacement(all); err == nil {
		t.Error("a placement that leaves the load generator no CPU was accepted")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
