//go:build !linux

package benchmarks

import (
	"errors"
	"os/exec"
)

// Placement is Linux only (sched_setaffinity); elsewhere --relay-cpus is
// refused.
type Placement struct{}

// NewPlacement says why it cannot place anything here.
func NewPlacement(list string) (*Placement, error) {
	return nil, errors.New("--relay-cpus needs Linux (sched_setaffinity)")
}

// RelayCPUs is never reached without a placement.
func (p *Placement) RelayCPUs() int { return 0 }

func (p *Placement) String() string { return "" }

// PinSelf is never reached without a placement.
func (p *Placement) PinSelf() error { return nil }

// Start starts cmd where the OS puts it.
func (p *Placement) Start(cmd *exec.Cmd) error { return cmd.Start() }

func (p *Placement) describe() string { return "" }
