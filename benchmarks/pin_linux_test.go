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
		// A placement needs a CPU for each side. With one, NewPlacement
		// refuses, which TestNewPlacementRefuses checks on any machine.
		t.Skip("needs two CPUs to place the relay and the load generator apart")
	}
	first := -1
	for c := range 1024 {
		if mine.IsSet(c) {
			first = c
			break
		}
	}
	p, err := NewPlacement(strconv.Itoa(first))
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
	if got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out.String()), "Cpus_allowed_list:")); got != strconv.Itoa(first) {
		t.Fatalf("the relay may run on CPUs %q, want %d", got, first)
	}
	// Every thread of ours still has all it had.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(tidOf(tk.Name()), &s); err == nil && s != mine {
			t.Fatalf("thread %s left with %d CPUs, want %d", tk.Name(), s.Count(), mine.Count())
		}
	}

}

// NewPlacement refuses a CPU this process may not use, and a placement
// that leaves the load generator none (which one CPU alone always is).
func TestNewPlacementRefuses(t *testing.T) {
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPlacement("1023"); err == nil {
		t.Error("a CPU outside the affinity was accepted")
	}
	if _, err := NewPlacement(cpuList(&mine)); err == nil {
		t.Error("a placement that leaves the load generator no CPU was accepted")
	}
}

// tidOf is a /proc/self/task entry's thread id (-1 if it is not one,
// which SchedGetaffinity refuses).
func tidOf(name string) int {
	n, err := strconv.Atoi(name)
	if err != nil {
		return -1
	}
	return n
}
