package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// ErrNoPorts is returned by PortAllocator.Allocate when every pair in the
// range is in use (by this process or another).
var ErrNoPorts = errors.New("no free RTP port pair")

// PortAllocator hands out even/odd RTP/RTCP UDP port pairs from a fixed range
// on one IP. It allocates round-robin, so a port freed by one call is not
// handed to the next call at once: late packets of the old call would
// otherwise reach the new one.
type PortAllocator struct {
	ip    netip.Addr
	first int // first even port
	pairs int // number of pairs in the range

	mu    sync.Mutex
	next  int    // pair index to try first
	used  []bool // by pair index
	inUse int
}

// NewPortAllocator returns an allocator for the pairs (p, p+1), p even, with
// minPort <= p and p+1 <= maxPort, bound on ip (an IPv4 or IPv6 literal; "" or
// "0.0.0.0" binds all IPv4 interfaces).
func NewPortAllocator(ip string, minPort, maxPort int) (*PortAllocator, error) {
	if ip == "" {
		ip = "0.0.0.0"
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("port allocator: bad ip %q: %w", ip, err)
	}
	if minPort < 1 || maxPort > 65535 || minPort > maxPort {
		return nil, fmt.Errorf("port allocator: bad range %d-%d", minPort, maxPort)
	}
	first := minPort + minPort%2
	pairs := 0
	if maxPort >= first+1 {
		pairs = (maxPort - first + 1) / 2
	}
	if pairs == 0 {
		return nil, fmt.Errorf("port allocator: range %d-%d holds no even/odd pair", minPort, maxPort)
	}
	return &PortAllocator{ip: addr.Unmap(), first: first, pairs: pairs, used: make([]bool, pairs)}, nil
}

// PortPair is one bound RTP/RTCP socket pair from a PortAllocator.
type PortPair struct {
	rtp, rtcp *udpSock
	a         *PortAllocator
	idx       int
	once      sync.Once
}

// Port is the (even) RTP port; the RTCP port is Port()+1.
func (p *PortPair) Port() int { return p.a.first + 2*p.idx }

// Close closes both sockets and returns the pair to its allocator. It is
// idempotent.
func (p *PortPair) Close() error {
	var err error
	p.once.Do(func() {
		err = errors.Join(p.rtp.close(), p.rtcp.close())
		p.a.release(p.idx)
	})
	return err
}

// Allocate binds the next free pair. Pairs that another process holds are
// skipped, so the allocator shares the range gracefully.
func (a *PortAllocator) Allocate() (*PortPair, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 0; i < a.pairs; i++ {
		idx := (a.next + i) % a.pairs
		if a.used[idx] {
			continue
		}
		port := a.first + 2*idx
		rtp, err := a.listen(port)
		if err != nil {
			continue
		}
		rtcp, err := a.listen(port + 1)
		if err != nil {
			rtp.close()
			continue
		}
		a.used[idx] = true
		a.inUse++
		a.next = (idx + 1) % a.pairs
		return &PortPair{rtp: rtp, rtcp: rtcp, a: a, idx: idx}, nil
	}
	return nil, fmt.Errorf("port allocator %s:%d-%d: %w", a.ip, a.first, a.first+2*a.pairs-1, ErrNoPorts)
}

func (a *PortAllocator) listen(port int) (*udpSock, error) {
	c, err := net.ListenUDP(bindNetwork("udp", a.ip), net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.ip, uint16(port))))
	if err != nil {
		return nil, err
	}
	return newUDPSock(c)
}

// bindNetwork is the network for a proto ("udp", "tcp") socket bound to
// a: IPv4 only for an IPv4 address, both families for the IPv6 wildcard
// (a dual-stack socket: Go makes "udp6" sockets IPv6-only), IPv6 for any
// other IPv6 address.
func bindNetwork(proto string, a netip.Addr) string {
	switch {
	case a.Is4():
		return proto + "4"
	case a.IsUnspecified():
		return proto
	}
	return proto + "6"
}

func (a *PortAllocator) release(idx int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[idx] {
		a.used[idx] = false
		a.inUse--
	}
}

// InUse is the number of pairs currently allocated.
func (a *PortAllocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inUse
}

// IP is the address the allocator binds.
func (a *PortAllocator) IP() netip.Addr { return a.ip }
