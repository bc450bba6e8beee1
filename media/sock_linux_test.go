//go:build linux

package media

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mediarelay/mediarelay/pkg/testenv"
)

// epollWatchers returns, for each epoll descriptor of the process, the
// inodes it watches (from /proc/self/fdinfo).
func epollWatchers(t *testing.T) map[int][]uint64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		testenv.Missing(t, "no /proc", err)
	}
	out := map[int][]uint64{}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != "anon_inode:[eventpoll]" {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		out[fd] = nil
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			for _, f := range strings.Fields(sc.Text()) {
				if ino, ok := strings.CutPrefix(f, "ino:"); ok {
					if n, err := strconv.ParseUint(ino, 16, 64); err == nil {
						out[fd] = append(out[fd], n)
					}
				}
			}
		}
	}
	return out
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// watchedBy lists the epoll descriptors watching ino.
func watchedBy(t *testing.T, ino uint64) []int {
	var eps []int
	for ep, inos := range epollWatchers(t) {
		for _, n := range inos {
			if n == ino {
				eps = append(eps, ep)
			}
		}
	}
	return eps
}

// TestServedSocketsOnlyOnTheirLoop: a served SIP leg's RTP and RTCP
// sockets and the WebRTC port's shards are watched by their media loop's
// epoll set alone, not also by Go's netpoller (which would wake the
// runtime for every packet the loop takes and every one it sends); a
// reader that blocks in ReadRTP gets a socket the netpoller watches, and
// it still reads.
func TestServedSocketsOnlyOnTheirLoop(t *testing.T) {
	loops, err := engineLoops()
	if err != nil {
		testenv.Missing(t, "no media loops", err)
	}
	isLoop := map[int]bool{}
	for _, lp := range loops {
		isLoop[lp.epfd] = true
	}
	onlyLoop := func(what string, fd int) {
		t.Helper()
		eps := watchedBy(t, inode(t, fd))
		if len(eps) != 1 || !isLoop[eps[0]] {
			t.Errorf("%s (fd %d) is watched by epoll fds %v; want exactly one media loop's (loops: %v)", what, fd, eps, isLoop)
		}
	}

	leg := newTestLeg(t, testPorts(t, 1), RTPLegOptions{})
	p := newUDPPeer(t)
	leg.SetRemote(udpAddr(p.rtp), udpAddr(p.rtcp))
	got := make(chan []byte, 8)
	done := serveInto(leg, got)
	want := mkRTP(t, 0, 1, 160, 0x1234, false, []byte("served"))
	udpSend(t, p.rtp, leg.LocalAddr(), want)
	select {
	case pkt := <-got:
		if !bytes.Equal(pkt, want) {
			t.Fatalf("served %x, want %x", pkt, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing served")
	}
	onlyLoop("RTP socket", leg.pair.rtp.fd)
	onlyLoop("RTCP socket", leg.pair.rtcp.fd)

	w, err := NewWebRTC(WebRTCOptions{BindIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i, s := range w.shards {
		onlyLoop(fmt.Sprintf("WebRTC shard %d", i), s.sock.fd)
	}

	// Hand the leg to a blocking reader: its socket joins the netpoller
	// and the packet reaches it.
	if err := leg.PauseReads(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := leg.ResumeReads(); err != nil {
		t.Fatal(err)
	}
	want2 := mkRTP(t, 0, 2, 320, 0x1234, false, []byte("read"))
	udpSend(t, p.rtp, leg.LocalAddr(), want2)
	if pkt := readLegRTP(t, leg); !bytes.Equal(pkt, want2) {
		t.Fatalf("read %x, want %x", pkt, want2)
	}
	if eps := watchedBy(t, inode(t, leg.pair.rtp.fd)); len(eps) == 0 {
		t.Error("a socket read with ReadRTP is not in Go's netpoller")
	}
}
