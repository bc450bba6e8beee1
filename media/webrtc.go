package media

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"golang.org/x/sys/unix"
)

// The WebRTC side of the relay is a small packet engine of its own rather
// than pion/webrtc's PeerConnection: pion's per-packet chain (ICE mux reader,
// packetio buffers, an SRTP session goroutine, track readers, interceptors)
// cost several goroutine hand-offs per packet. Here every WebRTC leg shares
// one UDP port, read by one goroutine per shard (SO_REUSEPORT sockets, a
// shard per core) with recvmmsg. The shard answers ICE connectivity checks
// itself (the relay is ICE-lite, RFC 8445 §2.5), hands DTLS records to the
// leg's pion/dtls handshake, and once the SRTP keys are exported
// (RFC 5764 §4.2) decrypts media in place and passes it straight to the
// call's forwarding stage, on the same goroutine.

// WebRTCOptions configures the WebRTC side of a relay.
type WebRTCOptions struct {
	// BindIP and Port are where the one UDP port shared by every WebRTC
	// leg listens, so operators open a single port. Port 0 picks one.
	BindIP string
	Port   int
	// PublicIPs, when set, are advertised in ICE candidates instead of
	// the socket's address (NAT 1:1): one address, or one per family on a
	// dual-stack port.
	PublicIPs []netip.Addr
	// ConnectTimeout bounds ICE+DTLS after the answer is sent; 0 means 20 s.
	ConnectTimeout time.Duration
	// ConsentTimeout ends a connected leg whose browser stopped sending
	// connectivity checks (RFC 7675 consent); 0 means 30 s.
	ConsentTimeout time.Duration
	// Shards is the number of sockets and reading goroutines sharing the
	// port; 0 means one per core (GOMAXPROCS).
	Shards int
	// TCPPort is where passive ICE-TCP candidates (RFC 6544) listen, for
	// browsers whose network blocks UDP: 0 offers none, TCPSameAsUDP the
	// UDP port's number (with Port 0, an ephemeral TCP port).
	TCPPort int
	// TCPMaxConns and TCPMaxPerSource cap open ICE-TCP connections in
	// total and per source IP; 0 means 4096 and 256 (many browsers may
	// share one NAT address, and unverified connections close within
	// seconds).
	TCPMaxConns, TCPMaxPerSource int
	Logger                       *slog.Logger
}

// TCPSameAsUDP as WebRTCOptions.TCPPort listens for ICE-TCP on the UDP
// port's number.
const TCPSameAsUDP = -1

// WebRTC holds what all WebRTC legs share: the shards reading the shared
// port, the DTLS certificate, and the legs by ICE username fragment.
type WebRTC struct {
	opts   WebRTCOptions
	log    *slog.Logger
	cert   tls.Certificate
	fp     string // our a=fingerprint value: "sha-256 AB:CD:..."
	local  netip.AddrPort
	cands  []netip.Addr // advertised in candidates
	shards []*shard
	tcp    *iceTCP // nil without ICE-TCP
	// strays counts DTLS and SRTP datagrams from sources no leg has
	// verified by ICE: dropped, never forwarded (StrayPackets).
	strays atomic.Uint64

	mu   sync.Mutex
	legs map[string]*WebRTCLeg // by local ICE ufrag

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// NewWebRTC opens the shared UDP port and starts its shards.
func NewWebRTC(o WebRTCOptions) (*WebRTC, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 20 * time.Second
	}
	if o.ConsentTimeout <= 0 {
		o.ConsentTimeout = 30 * time.Second
	}
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.TCPMaxConns <= 0 {
		o.TCPMaxConns = 4096
	}
	if o.TCPMaxPerSource <= 0 {
		o.TCPMaxPerSource = 256
	}
	bind, err := netip.ParseAddr(o.BindIP)
	if o.BindIP == "" {
		bind, err = netip.IPv4Unspecified(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("webrtc bind address %q: %w", o.BindIP, err)
	}
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		return nil, fmt.Errorf("webrtc dtls certificate: %w", err)
	}
	fp, err := Fingerprint(cert, "sha-256")
	if err != nil {
		return nil, err
	}
	w := &WebRTC{opts: o, log: o.Logger, cert: cert, fp: fp, legs: map[string]*WebRTCLeg{}, done: make(chan struct{})}
	port := o.Port
	for i := 0; i < o.Shards; i++ {
		conn, err := listenReusePort(netip.AddrPortFrom(bind, uint16(port)))
		if err != nil {
			w.closeShards()
			return nil, fmt.Errorf("webrtc udp port %s: %w", netip.AddrPortFrom(bind, uint16(port)), err)
		}
		if port == 0 {
			port = conn.LocalAddr().(*net.UDPAddr).Port
		}
		// Every WebRTC leg's packets queue on these sockets: the
		// kernel's default receive buffer (~200 KB) overflows at a few
		// hundred calls, so ask for more (SO_RCVBUFFORCE when root).
		if err := setReadBuffer(conn, webrtcReadBuffer/o.Shards); err != nil {
			o.Logger.Warn("webrtc udp port: receive buffer not raised", "err", err)
		}
		sock, err := newUDPSock(conn)
		if err != nil {
			w.closeShards()
			return nil, fmt.Errorf("webrtc udp port: %w", err)
		}
		w.shards = append(w.shards, newShard(w, sock))
	}
	w.local = netip.AddrPortFrom(bind, uint16(port))
	w.cands = candidateAddrs(bind, o.PublicIPs)
	if len(w.cands) == 0 {
		w.closeShards()
		return nil, fmt.Errorf("webrtc: no address to advertise for %s", bind)
	}
	if tp := o.TCPPort; tp != 0 {
		if tp == TCPSameAsUDP {
			tp = o.Port // with Port 0, the kernel picks both
		}
		if w.tcp, err = w.listenICETCP(netip.AddrPortFrom(bind, uint16(tp)), o.TCPMaxConns, o.TCPMaxPerSource); err != nil {
			w.closeShards()
			return nil, fmt.Errorf("webrtc ice-tcp port %s: %w", netip.AddrPortFrom(bind, uint16(tp)), err)
		}
	}
	for i, s := range w.shards {
		s.start(i, &w.wg)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.janitor()
	}()
	return w, nil
}

// listenReusePort opens one of the shard sockets of the shared port.
func listenReusePort(addr netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(nilContext(), bindNetwork("udp", addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// candidateAddrs lists the addresses advertised as host candidates: the
// public address if configured, the bound one if specific, else every
// interface's (IPv4 and IPv6, loopback included for one-host setups).
func candidateAddrs(bind netip.Addr, public []netip.Addr) []netip.Addr {
	if len(public) > 0 {
		return public
	}
	if !bind.IsUnspecified() {
		return []netip.Addr{bind}
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		pfx, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := pfx.Addr().Unmap()
		if a.IsLinkLocalUnicast() || (bind.Is4() && !a.Is4()) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// LocalAddr is the shared UDP port's address.
func (w *WebRTC) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(w.local) }

// TCPAddr is the ICE-TCP listener's address, nil when there is none.
func (w *WebRTC) TCPAddr() net.Addr {
	if w.tcp == nil {
		return nil
	}
	return w.tcp.ln.Addr()
}

// Close closes the shared port; open legs fail.
func (w *WebRTC) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.closeShards()
		w.wg.Wait()
		w.mu.Lock()
		legs := make([]*WebRTCLeg, 0, len(w.legs))
		for _, l := range w.legs {
			legs = append(legs, l)
		}
		w.mu.Unlock()
		for _, l := range legs {
			l.fail(FailClosed, errors.New("webrtc port closed"))
		}
	})
	return nil
}

func (w *WebRTC) closeShards() {
	if w.tcp != nil {
		w.tcp.close()
	}
	for _, s := range w.shards {
		s.close()
	}
}

func (w *WebRTC) legByUfrag(ufrag string) *WebRTCLeg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.legs[ufrag]
}

// register adds a new leg under a fresh ufrag and returns it.
func (w *WebRTC) register(l *WebRTCLeg) error {
	for range 8 {
		u, err := iceToken(8)
		if err != nil {
			return err
		}
		w.mu.Lock()
		if _, taken := w.legs[u]; !taken {
			l.ufrag = u
			w.legs[u] = l
			w.mu.Unlock()
			return nil
		}
		w.mu.Unlock()
	}
	return errors.New("webrtc: no free ICE ufrag")
}

func (w *WebRTC) unregister(l *WebRTCLeg) {
	w.mu.Lock()
	if w.legs[l.ufrag] == l {
		delete(w.legs, l.ufrag)
	}
	w.mu.Unlock()
}

// janitorInterval paces consent checks, connect timeouts, RTCP reports and
// the sweep of closed legs' addresses.
const janitorInterval = time.Second

// janitor runs the per-leg timers of every leg on one goroutine, so a leg
// costs no goroutine of its own once connected.
func (w *WebRTC) janitor() {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	var legs []*WebRTCLeg
	for {
		select {
		case <-w.done:
			return
		case now := <-t.C:
			legs = legs[:0]
			w.mu.Lock()
			for _, l := range w.legs {
				legs = append(legs, l)
			}
			w.mu.Unlock()
			for _, l := range legs {
				l.tick(now)
			}
			for _, s := range w.shards {
				s.sweep()
			}
			if w.tcp != nil {
				w.tcp.sweep()
			}
		}
	}
}

// webrtcReadBuffer is the receive buffer asked for on the shared WebRTC
// port, split over its shards: about a second of traffic for 1000 calls.
const webrtcReadBuffer = 16 << 20

// StrayPackets is how many DTLS or SRTP datagrams reached the shared port
// from sources that no ICE check verified; they were dropped.
func (w *WebRTC) StrayPackets() uint64 { return w.strays.Load() }
