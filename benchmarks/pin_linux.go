//go:build linux

package benchmarks

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Placement puts the relay under test on some CPUs and the load generator
// (this process: client and trunk UAS) on the others (--relay-cpus). On a
// shared machine the generator costs about what the relay does, so without
// it a ladder finds where the two together fill the machine; with it, each
// has cores of its own, and the relay's knee is its own.
type Placement struct {
	relay, load unix.CPUSet
}

// NewPlacement gives the relay the CPUs in list ("0", "0-1", "0,2-3"),
// which must be among those this process may use and leave at least one
// to the load generator, which gets the rest.
func NewPlacement(list string) (*Placement, error) {
	var p Placement
	if err := unix.SchedGetaffinity(0, &p.load); err != nil {
		return nil, fmt.Errorf("cpu affinity: %w", err)
	}
	cpus, err := parseCPUList(list)
	if err != nil {
		return nil, err
	}
	for _, c := range cpus {
		if !p.load.IsSet(c) {
			return nil, fmt.Errorf("cpu %d: not one this process may use", c)
		}
		p.relay.Set(c)
		p.load.Clear(c)
	}
	if p.load.Count() == 0 {
		return nil, errors.New("no CPU left for the load generator")
	}
	return &p, nil
}

// parseCPUList reads a list such as "0,2-3".
func parseCPUList(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= 1024 {
			return nil, fmt.Errorf("cpu list %q: bad item %q", list, f)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// RelayCPUs is how many CPUs the relay has.
func (p *Placement) RelayCPUs() int { return p.relay.Count() }

// String is "relay on CPU a,b, load generator on CPU c,d".
func (p *Placement) String() string {
	return fmt.Sprintf("relay on CPU %s, load generator on CPU %s", cpuList(&p.relay), cpuList(&p.load))
}

func cpuList(s *unix.CPUSet) string {
	var b strings.Builder
	for c := range 1024 {
		if s.IsSet(c) {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(c))
		}
	}
	return b.String()
}

// PinSelf moves every thread of this process onto the load generator's
// CPUs; threads made later inherit that from the thread that makes them.
func (p *Placement) PinSelf() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("pin load generator: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &p.load); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin load generator thread %d: %w", tid, err)
		}
	}
	// A P per CPU. Two Ps on one CPU let the client's engine thread run
	// the moment its tick fires instead of when the UAS's goroutine yields
	// the P: browser->trunk jitter at 800 calls was 3.3 ms instead of
	// 6.6 ms (it includes the client's pacing), but the generator cost
	// 17 % more, and a cheap generator is what lets a ladder reach the
	// relay's knee. Delay is measured from the kernel's stamps either way.
	runtime.GOMAXPROCS(p.load.Count())
	return nil
}

// Start starts cmd on the relay's CPUs. A child inherits the affinity of
// the thread that forks it, so the fork is made from a thread set to them
// for the moment: the relay runs there from its first instruction, and Go
// relays size GOMAXPROCS to it. The thread is set back, or, if that fails,
// ends with its goroutine rather than carry the relay's CPUs into the
// load generator.
func (p *Placement) Start(cmd *exec.Cmd) error {
	if p == nil {
		return cmd.Start()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var was unix.CPUSet
		if err := unix.SchedGetaffinity(0, &was); err != nil {
			done <- fmt.Errorf("cpu affinity: %w", err)
			return // the thread ends locked: it is not reused
		}
		if err := unix.SchedSetaffinity(0, &p.relay); err != nil {
			done <- fmt.Errorf("pin relay: %w", err)
			return
		}
		err := cmd.Start()
		if unix.SchedSetaffinity(0, &was) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// describe is String, or "" for no placement.
func (p *Placement) describe() string {
	if p == nil {
		return ""
	}
	return p.String()
}
