package signaling

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// ownSockets returns the local addresses of this process's sockets listed
// in /proc/self/net/<proto> (udp, udp6, tcp, tcp6), with TCP's state.
func ownSockets(t *testing.T, proto string) map[string]string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	f, err := os.Open("/proc/self/net/" + proto)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !inodes[fields[9]] {
			continue
		}
		out[procAddr(fields[1])] = fields[3]
	}
	return out
}

// procAddr decodes /proc/net's "0100007F:13C4" (host byte order, per 32-bit word).
func procAddr(s string) string {
	h, p, _ := strings.Cut(s, ":")
	port, _ := strconv.ParseUint(p, 16, 16)
	b, _ := hex.DecodeString(h)
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	ip, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
}

// TestNoStraySIPSockets: after calls to and from a UDP trunk, no UDP
// socket of the process except the configured listener and the trunk's own
// answers SIP, none is bound to a wildcard address, and the only TCP
// listeners are the configured ones.
func TestNoStraySIPSockets(t *testing.T) {
	// Sockets other tests of this binary left open are not this relay's.
	before := map[string]bool{}
	for _, proto := range []string{"udp", "udp6", "tcp", "tcp6"} {
		for addr := range ownSockets(t, proto) {
			before[proto+" "+addr] = true
		}
	}
	if len(before) > 0 {
		t.Logf("sockets open before the test, not counted: %v", before)
	}
	u := newTrunkUAS(t)
	r := startRelay(t, withTrunk(u, mediaplan.ModeAuto, "PCMU"))
	p := newPhone(t, "PCMU")
	p.call(r, "+15551234567")
	p.hangup() // the relay BYEs the trunk
	waitChan(t, "BYE to the trunk", u.byes)
	p2 := newPhone(t, "PCMU")
	p2.call(r, "+15551234568")
	// the trunk hangs up: the relay answers its BYE
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := u.lastDialog(t).Bye(ctx); err != nil {
		t.Fatalf("trunk BYE: %v", err)
	}
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })

	listening := map[string]bool{r.SIPTCPAddr().String(): true, r.HTTPAddr().String(): true}
	if a := r.webrtc.TCPAddr(); a != nil {
		listening[a.String()] = true // media.ice_tcp_port
	}
	for _, proto := range []string{"tcp", "tcp6"} {
		for addr, state := range ownSockets(t, proto) {
			if state == "0A" && !listening[addr] && !before[proto+" "+addr] { // TCP_LISTEN
				t.Errorf("TCP listener nobody configured: %s", addr)
			}
		}
	}
	allowed := map[string]bool{r.SIPUDPAddr().String(): true, u.addr: true}
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for _, proto := range []string{"udp", "udp6"} {
		for addr := range ownSockets(t, proto) {
			if before[proto+" "+addr] {
				continue
			}
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				continue
			}
			if ap.Addr().IsUnspecified() {
				t.Errorf("UDP socket on a wildcard address: %s", addr)
				continue
			}
			if allowed[addr] || addr == probe.LocalAddr().String() || !ap.Addr().IsLoopback() {
				continue
			}
			if answersSIP(probe, addr) {
				t.Errorf("UDP socket %s answers SIP", addr)
			}
		}
	}
}

// answersSIP sends OPTIONS to addr and reports whether a SIP response came back.
func answersSIP(probe net.PacketConn, addr string) bool {
	dst, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return false
	}
	branch := strconv.FormatInt(time.Now().UnixNano(), 36)
	msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"+
		"To: <sip:%s>\r\nCall-ID: %s@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", addr, probe.LocalAddr(), branch, addr, branch)
	if _, err := probe.WriteTo([]byte(msg), dst); err != nil {
		return false
	}
	buf := make([]byte, 4096)
	for {
		_ = probe.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, from, err := probe.ReadFrom(buf)
		if err != nil {
			return false
		}
		if from.String() != dst.String() {
			continue
		}
		if m, err := sip.ParseMessage(buf[:n]); err == nil {
			if _, ok := m.(*sip.Response); ok {
				return true
			}
		}
	}
}
