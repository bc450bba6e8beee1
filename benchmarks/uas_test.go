package benchmarks

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// TestUASAnswersDTLSSRTP: to an end-to-end offer (UDP/TLS/RTP/SAVP, the
// browser's fingerprint) the trunk UAS answers with its own certificate's
// fingerprint and the opposite DTLS role, and refuses an offer it could
// not verify.
func TestUASAnswersDTLSSRTP(t *testing.T) {
	u, err := NewUAS(t.Context(), "127.0.0.1:0", true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const fp = "sha-256 9A:A9:5C:9B:79:09:D8:BF:F6:B8:96:C1:F3:04:40:EC:23:F8:37:C8:38:07:29:A1:1A:0B:A4:5C:79:66:C8:91"
	offer := func(setup string) string {
		return strings.Join([]string{
			"v=0", "o=mediarelay 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio 30000 UDP/TLS/RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", "a=fingerprint:" + fp, "a=setup:" + setup, "a=rtcp-mux", "",
		}, "\r\n")
	}
	for setup, want := range map[string]string{"actpass": "a=setup:passive", "active": "a=setup:passive", "passive": "a=setup:active"} {
		ans, err := u.Answer("k-"+setup, []byte(offer(setup)))
		if err != nil {
			t.Fatalf("setup:%s: %v", setup, err)
		}
		a := string(ans)
		for _, line := range []string{"m=audio " + strconv.Itoa(u.RTPPort()) + " UDP/TLS/RTP/SAVP 0", "a=fingerprint:" + u.id.fp, want, "a=rtcp-mux"} {
			if !strings.Contains(a, line+"\r\n") {
				t.Errorf("setup:%s: answer lacks %q:\n%s", setup, line, a)
			}
		}
		u.Release("k-" + setup)
	}
	if _, err := u.Answer("k", []byte(strings.Replace(offer("actpass"), "a=fingerprint:"+fp+"\r\n", "", 1))); err == nil {
		t.Error("a DTLS-SRTP offer without a fingerprint was answered")
	}
}

// TestUASEchoesBursts: datagrams that queue up in the UAS's RTP socket
// (read and echoed a batch at a time) are all echoed, each to the call it
// came from with that call's SSRC and consecutive sequence numbers and the
// payload unchanged but for the marker's hold; each is counted and timed
// from its arrival. A datagram from an address no call negotiated is
// counted as unknown, and a runt or an oversized one is dropped, without
// disturbing the calls around them.
func TestUASEchoesBursts(t *testing.T) {
	u, err := NewUAS(t.Context(), "127.0.0.1:0", true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetMeasuring(true)
	uasAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(u.RTPPort()))
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadBuffer(1 << 20)
		return c
	}
	const calls, perCall = 2, 300
	var relays [calls]*net.UDPConn
	for i := range relays {
		relays[i] = listen()
		offer := strings.Join([]string{
			"v=0", "o=relay 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio " + strconv.Itoa(relays[i].LocalAddr().(*net.UDPAddr).Port) + " RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "",
		}, "\r\n")
		if _, err := u.Answer("k"+strconv.Itoa(i), []byte(offer)); err != nil {
			t.Fatal(err)
		}
	}
	stranger := listen()

	packet := func(seq uint16) []byte {
		payload := make([]byte, 160+markerLen)
		for j := range payload {
			payload[j] = byte(seq) + byte(j)
		}
		stampMarker(payload, nowNs())
		h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 42}
		b, err := h.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return append(b, payload...)
	}
	start := time.Now()
	sent := map[int][][]byte{}
	for s := range uint16(perCall) {
		for i, r := range relays {
			p := packet(1000 + s)
			sent[i] = append(sent[i], p)
			if _, err := r.WriteToUDPAddrPort(p, uasAddr); err != nil {
				t.Fatal(err)
			}
		}
		if s == perCall/2 {
			for _, hostile := range [][]byte{{0x80, 0}, make([]byte, slotSize+100)} {
				if _, err := relays[0].WriteToUDPAddrPort(hostile, uasAddr); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := stranger.WriteToUDPAddrPort(packet(1), uasAddr); err != nil {
				t.Fatal(err)
			}
		}
	}

	buf := make([]byte, 2048)
	var ssrcs [calls]uint32
	var lastSeq [calls]uint16
	for i, r := range relays {
		_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
		var h rtp.Header
		for k := range perCall {
			n, err := r.Read(buf)
			if err != nil {
				t.Fatalf("call %d: echo %d of %d: %v", i, k, perCall, err)
			}
			hl, err := h.Unmarshal(buf[:n])
			if err != nil {
				t.Fatalf("call %d: echo %d: %v", i, k, err)
			}
			if k == 0 {
				ssrcs[i] = h.SSRC
			}
			want := sent[i][k][12:]
			got := buf[hl:n]
			if h.SSRC != ssrcs[i] || len(got) != len(want) ||
				!bytes.Equal(got[:len(got)-markerLen+12], want[:len(want)-markerLen+12]) {
				t.Fatalf("call %d: echo %d: SSRC %d (first %d), %d bytes, want the sent payload back", i, k, h.SSRC, ssrcs[i], len(got))
			}
			if k > 0 {
				if prev := h.SequenceNumber - 1; prev != lastSeq[i] {
					t.Fatalf("call %d: echo %d has sequence %d after %d", i, k, h.SequenceNumber, lastSeq[i])
				}
			}
			lastSeq[i] = h.SequenceNumber
		}
	}
	if ssrcs[0] == ssrcs[1] {
		t.Errorf("both calls echoed with SSRC %d", ssrcs[0])
	}
	elapsed := time.Since(start)
	for i := range relays {
		st, _ := u.CallStats("k" + strconv.Itoa(i))
		if st.Received != perCall || st.Expected != perCall {
			t.Errorf("call %d: UAS counted %d of %d expected, want %d", i, st.Received, st.Expected, perCall)
		}
		d := u.TakeDelays("k" + strconv.Itoa(i))
		if len(d) != perCall {
			t.Errorf("call %d: %d delay samples, want %d", i, len(d), perCall)
		}
		for _, ms := range d {
			if ms < 0 || ms > float64(elapsed.Milliseconds()+1) {
				t.Fatalf("call %d: one-way delay %.3f ms, want within [0, %v]", i, ms, elapsed)
			}
		}
	}
	if got := u.Unknown(); got != 1 {
		t.Errorf("unknown-source datagrams: %d, want 1", got)
	}
}
