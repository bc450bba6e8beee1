package signaling

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/bencode"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/transcode"
	"github.com/mediarelay/mediarelay/transcode/tone"
)

// ngClient is a SIP proxy's side of the ng protocol, on a real UDP socket.
type ngClient struct {
	t    *testing.T
	conn *net.UDPConn
	n    int
}

func newNGClient(t *testing.T, r *Relay) *ngClient {
	t.Helper()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.NGAddr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &ngClient{t: t, conn: conn}
}

// do sends one command and returns the reply's dictionary.
func (c *ngClient) do(d map[string]any) map[string]any {
	c.t.Helper()
	c.n++
	cookie := fmt.Sprintf("cookie%d", c.n)
	b, err := bencode.Append([]byte(cookie+" "), d)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.conn.Read(buf)
	if err != nil {
		c.t.Fatalf("ng %v: no reply: %v", d["command"], err)
	}
	got, body, _ := bytes.Cut(buf[:n], []byte(" "))
	if string(got) != cookie {
		c.t.Fatalf("reply cookie %q, want %q", got, cookie)
	}
	res, err := bencode.DecodeDict(body)
	if err != nil {
		c.t.Fatalf("reply %q: %v", body, err)
	}
	return res
}

// ok is do for a command that must succeed.
func (c *ngClient) ok(d map[string]any) map[string]any {
	c.t.Helper()
	res := c.do(d)
	if res["result"] != "ok" {
		c.t.Fatalf("ng %v: %v", d["command"], res)
	}
	return res
}

func ngRelay(t *testing.T) *Relay {
	return startRelay(t, func(c *config.Config) { c.NG.Listen = "127.0.0.1:0" })
}

// plainPeer is a SIP-side RTP endpoint: a UDP socket on loopback; got has
// every packet it receives.
type plainPeer struct {
	conn *net.UDPConn
	got  chan []byte
}

func newPlainPeer(t *testing.T) *plainPeer { return startPlainPeer(t, false) }

// startPlainPeer starts a peer; with echo it sends every packet back.
func startPlainPeer(t *testing.T, echo bool) *plainPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &plainPeer{conn: conn, got: make(chan []byte, 1000)}
	go serveRTP(conn, p.got, echo)
	t.Cleanup(func() { _ = conn.Close() })
	return p
}

// audioPayloads passes on the payloads of the audio RTP packets (not
// telephone-event, not RTCP) that arrive on raw, until two seconds pass
// without one.
func audioPayloads(raw <-chan []byte) <-chan []byte {
	out := make(chan []byte, 1000)
	go func() {
		defer close(out)
		for {
			select {
			case b := <-raw:
				var pkt rtp.Packet
				if pkt.Unmarshal(b) == nil && pkt.PayloadType < 64 {
					out <- pkt.Payload
				}
			case <-time.After(2 * time.Second):
				return
			}
		}
	}()
	return out
}

// phonePayloads passes on the payloads the phone receives, until two
// seconds pass without one.
func phonePayloads(p *phone) <-chan []byte {
	out := make(chan []byte, 1000)
	go func() {
		defer close(out)
		for {
			select {
			case pkt := <-p.received:
				out <- pkt.Payload
			case <-time.After(2 * time.Second):
				return
			}
		}
	}()
	return out
}

func (p *plainPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// sdp is the peer's plain RTP/AVP SDP with PCMU and telephone-event.
func (p *plainPeer) sdp() string {
	return string(sdp.Offer{SessionID: 1, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Port: p.port(),
		Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.DTMF8k}}.Marshal())
}

// send sends n PCMU packets to the relay, each payload naming its index.
func (p *plainPeer) send(t *testing.T, to netip.AddrPort, n int) [][]byte {
	t.Helper()
	var sent [][]byte
	for i := 0; i < n; i++ {
		payload := bytes.Repeat([]byte{byte(i)}, 160)
		copy(payload, fmt.Sprintf("sip-%04d", i))
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i),
			Timestamp: uint32(i * 160), SSRC: 0xfeed}, Payload: payload}
		b, _ := pkt.Marshal()
		if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, payload)
		time.Sleep(20 * time.Millisecond)
	}
	return sent
}

// connect waits for the phone's ICE and DTLS.
func connect(t *testing.T, p *phone) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p.waitConnected(ctx)
}

// exchange sends audio both ways and checks it arrives unchanged
// (passthrough); it returns how many packets each side received.
func exchange(t *testing.T, p *phone, peer *plainPeer, relayRTP netip.AddrPort) (toPlain, toWeb int) {
	t.Helper()
	sent := p.sendFrames(25, 160)
	toPlain = matchPayloads(t, "browser → sip", sent, audioPayloads(peer.got))
	back := peer.send(t, relayRTP, 25)
	toWeb = matchPayloads(t, "sip → browser", back, phonePayloads(p))
	return toPlain, toWeb
}

// matchPayloads reads what arrives until a second passes without a
// packet; every payload must be one that was sent, and most must arrive.
func matchPayloads(t *testing.T, what string, sent [][]byte, got <-chan []byte) int {
	t.Helper()
	want := map[string]bool{}
	for _, s := range sent {
		want[string(s)] = true
	}
	n := 0
	for {
		select {
		case b, ok := <-got:
			if !ok {
				goto done
			}
			if !want[string(b)] {
				t.Fatalf("%s: payload %q was not sent", what, truncateBytes(b))
			}
			n++
		case <-time.After(time.Second):
			goto done
		}
	}
done:
	if n < len(sent)/2 {
		t.Fatalf("%s: %d of %d packets arrived", what, n, len(sent))
	}
	return n
}

func truncateBytes(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func streamPackets(t *testing.T, stats map[string]any, tag string) int64 {
	t.Helper()
	tags, _ := stats["tags"].(map[string]any)
	party, _ := tags[tag].(map[string]any)
	medias, _ := party["medias"].([]any)
	if len(medias) != 1 {
		t.Fatalf("tag %s: medias %v", tag, party)
	}
	streams, _ := medias[0].(map[string]any)["streams"].([]any)
	st, _ := streams[0].(map[string]any)["stats"].(map[string]any)
	n, _ := st["packets"].(int64)
	return n
}

// TestNGWebRTCOfferToPlainRTP is the WebRTC gateway case of a Kamailio
// configuration: the browser's offer leaves as plain RTP/AVP, the SIP
// side's plain answer comes back as WebRTC (ICE-lite, DTLS), and audio
// passes both ways unchanged; delete returns per-party statistics and the
// CDR says the call came over ng and from which proxy.
func TestNGWebRTCOfferToPlainRTP(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	if res := ngc.do(map[string]any{"command": "ping"}); res["result"] != "pong" {
		t.Fatalf("ping: %v", res)
	}
	p := newPhone(t, "PCMU", "opus")
	res := ngc.ok(map[string]any{
		"command": "offer", "call-id": "ng-call-1", "from-tag": "caller", "via-branch": "z9hG4bK1",
		"sdp": p.offer(), "transport-protocol": "RTP/AVP", "ICE": "remove", "DTLS": "off",
		"rtcp-mux": []any{"demux"}, "replace": []any{"origin", "session-connection"},
		"flags": []any{"trust-address", "generate-mid"}, "label": "browser",
	})
	plainOffer := res["sdp"].(string)
	_, po, err := sdp.Parse([]byte(plainOffer))
	if err != nil {
		t.Fatalf("offer sdp: %v\n%s", err, plainOffer)
	}
	for _, bad := range []string{"a=ice-", "a=fingerprint", "a=candidate", "a=rtcp-mux", "a=setup"} {
		if strings.Contains(plainOffer, bad) {
			t.Errorf("plain offer has %s:\n%s", bad, plainOffer)
		}
	}
	if po.Proto != "RTP/AVP" || po.Addr != netip.MustParseAddr("127.0.0.1") || po.Port < r.cfg.Media.PortMin || po.Port > r.cfg.Media.PortMax {
		t.Fatalf("plain offer: proto %s at %s:%d\n%s", po.Proto, po.Addr, po.Port, plainOffer)
	}
	if _, ok := po.Find("PCMU"); !ok {
		t.Fatalf("plain offer without PCMU:\n%s", plainOffer)
	}
	relayRTP := netip.AddrPortFrom(po.Addr, uint16(po.Port))

	peer := newPlainPeer(t)
	res = ngc.ok(map[string]any{
		"command": "answer", "call-id": "ng-call-1", "from-tag": "caller", "to-tag": "callee",
		"sdp": peer.sdp(), "transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force", "rtcp-mux": []any{"require"},
		"label": "trunk",
	})
	webAnswer := res["sdp"].(string)
	for _, want := range []string{"UDP/TLS/RTP/SAVPF", "a=ice-ufrag", "a=fingerprint", "a=setup:", "a=candidate", "a=rtcp-mux", "PCMU"} {
		if !strings.Contains(webAnswer, want) {
			t.Errorf("webrtc answer lacks %s:\n%s", want, webAnswer)
		}
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: webAnswer}); err != nil {
		t.Fatalf("answer: %v", err)
	}
	connect(t, p)

	// A retransmitted answer (183 then 200) is the same answer.
	again := ngc.ok(map[string]any{"command": "answer", "call-id": "ng-call-1", "from-tag": "caller", "to-tag": "callee", "sdp": peer.sdp()})
	if again["sdp"] != webAnswer {
		t.Error("a repeated answer changed the SDP")
	}

	toPlain, toWeb := exchange(t, p, peer, relayRTP)

	q := ngc.ok(map[string]any{"command": "query", "call-id": "ng-call-1"})
	if n := streamPackets(t, q, "caller"); n < int64(toPlain) {
		t.Errorf("query: caller stream received %d packets, %d were forwarded", n, toPlain)
	}
	if tags := q["tags"].(map[string]any); tags["caller"].(map[string]any)["label"] != "browser" || tags["callee"].(map[string]any)["label"] != "trunk" {
		t.Errorf("labels: %v", tags)
	}
	list := ngc.ok(map[string]any{"command": "list"})
	if calls := list["calls"].([]any); len(calls) != 1 || calls[0] != "ng-call-1" {
		t.Errorf("list: %v", list)
	}
	st := ngc.ok(map[string]any{"command": "statistics"})["statistics"].(map[string]any)
	if cur := st["currentstatistics"].(map[string]any); cur["sessionsown"] != int64(1) || cur["sessionsng"] != int64(1) {
		t.Errorf("statistics: %v", st)
	}
	if legs := st["legs"].(map[string]any); legs["sip"].(map[string]any)["packets_in"].(int64) < int64(toWeb) {
		t.Errorf("statistics: sip packets_in below what was forwarded: %v", legs)
	}

	// /metrics agrees with statistics.
	resp, err := http.Get("http://" + r.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"mediarelay_calls_active 1\n", `mediarelay_ng_commands_total{command="offer",result="ok"} 1`,
		`mediarelay_ng_commands_total{command="ping",result="pong"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	relayCallID := r.ngSession("ng-call-1").c.id
	del := ngc.ok(map[string]any{"command": "delete", "call-id": "ng-call-1", "from-tag": "caller"})
	caller, callee := streamPackets(t, del, "caller"), streamPackets(t, del, "callee")
	if caller < int64(toPlain) || callee < int64(toWeb) {
		t.Errorf("delete: received caller %d callee %d; forwarded %d and %d", caller, callee, toPlain, toWeb)
	}
	totals := del["totals"].(map[string]any)["RTP"].(map[string]any)
	if totals["packets"].(int64) != caller+callee || totals["bytes"].(int64) <= 0 {
		t.Errorf("delete totals %v, streams %d + %d", totals, caller, callee)
	}
	if del["created"].(int64) <= 0 || del["last signal"].(int64) < del["created"].(int64) {
		t.Errorf("delete times: %v", del)
	}

	var rec struct{ dir, trunk, mode, cause string }
	waitFor(t, "the ng call's CDR", 5*time.Second, func() bool {
		got, err := r.CDR().Query(context.Background(), relayCallID)
		if err != nil || got.EndCause == "" || got.EndCause == "in_progress" {
			return false
		}
		rec.dir, rec.trunk, rec.mode, rec.cause = got.Direction, got.Trunk, got.Mode, got.EndCause
		return true
	})
	if rec.dir != DirectionNG || !strings.HasPrefix(rec.trunk, "ng:127.0.0.1:") || rec.mode != mediaplan.ModePassthrough || rec.cause != cdr.CauseNormalBrowser {
		t.Errorf("cdr: %+v", rec)
	}
	if r.ActiveCalls() != 0 || len(ngc.ok(map[string]any{"command": "list"})["calls"].([]any)) != 0 {
		t.Error("the call outlived its delete")
	}
}

// TestNGPlainOfferToWebRTC is the reverse: a SIP trunk's plain offer is
// turned into a WebRTC offer for the browser, whose answer goes back plain.
func TestNGPlainOfferToWebRTC(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	peer := newPlainPeer(t)
	res := ngc.ok(map[string]any{
		"command": "offer", "call-id": "ng-in-1", "from-tag": "trunk", "sdp": peer.sdp(),
		"flags": []any{"UDP/TLS/RTP/SAVPF", "ICE=force", "rtcp-mux-offer", "generate-mid"},
	})
	webOffer := res["sdp"].(string)
	for _, want := range []string{"UDP/TLS/RTP/SAVPF", "a=ice-ufrag", "a=fingerprint", "a=candidate", "a=mid:", "PCMU"} {
		if !strings.Contains(webOffer, want) {
			t.Errorf("webrtc offer lacks %s:\n%s", want, webOffer)
		}
	}
	p := newPhone(t, "PCMU")
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: webOffer}); err != nil {
		t.Fatalf("offer: %v", err)
	}
	a, err := p.pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(a); err != nil {
		t.Fatal(err)
	}
	<-g
	res = ngc.ok(map[string]any{
		"command": "answer", "call-id": "ng-in-1", "from-tag": "trunk", "to-tag": "browser",
		"sdp": p.pc.LocalDescription().SDP, "transport-protocol": "RTP/AVP", "ICE": "remove",
	})
	plainAnswer := res["sdp"].(string)
	_, pa, err := sdp.Parse([]byte(plainAnswer))
	if err != nil || pa.Proto != "RTP/AVP" || strings.Contains(plainAnswer, "a=ice-") || strings.Contains(plainAnswer, "fingerprint") {
		t.Fatalf("plain answer (%v):\n%s", err, plainAnswer)
	}
	connect(t, p)
	toPlain, toWeb := exchange(t, p, peer, netip.AddrPortFrom(pa.Addr, uint16(pa.Port)))
	del := ngc.ok(map[string]any{"command": "delete", "call-id": "ng-in-1"})
	if streamPackets(t, del, "browser") < int64(toPlain) || streamPackets(t, del, "trunk") < int64(toWeb) {
		t.Errorf("delete stats %v; forwarded %d and %d", del["tags"], toPlain, toWeb)
	}
}

// TestNGOfferFlags checks how the flags shape the plain offer, without media.
func TestNGOfferFlags(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	p := newPhone(t, "opus", "PCMU")
	browser := p.offer()
	cases := []struct {
		name     string
		extra    map[string]any
		want     []string
		wantNot  []string
		errorHas string
	}{
		{name: "strip", extra: map[string]any{"codec": map[string]any{"strip": []any{"opus"}}},
			want: []string{"PCMU/8000"}, wantNot: []string{"opus"}},
		{name: "mask in flags", extra: map[string]any{"flags": []any{"codec-mask-PCMU"}},
			want: []string{"opus/48000"}, wantNot: []string{"PCMU"}},
		{name: "transcode", extra: map[string]any{"codec": map[string]any{"strip": []any{"PCMU"}, "transcode": []any{"PCMA"}}},
			want: []string{"PCMA/8000", "opus/48000"}, wantNot: []string{"PCMU"}},
		// Masked and transcoded: the browser's PCMU is hidden, so the call
		// is transcoded and Opus is not offered on.
		{name: "forced transcoding", extra: map[string]any{"flags": []any{"codec-mask-PCMU", "codec-transcode-PCMU"}},
			want: []string{"PCMU/8000"}, wantNot: []string{"opus"}},
		{name: "sdes", extra: map[string]any{"transport-protocol": "RTP/SAVP", "SDES": []any{"only-AES_CM_128_HMAC_SHA1_80"}},
			want: []string{"RTP/SAVP", "a=crypto:", "AES_CM_128_HMAC_SHA1_80"}, wantNot: []string{"AES_CM_128_HMAC_SHA1_32", "GCM"}},
		{name: "sdes off", extra: map[string]any{"transport-protocol": "RTP/SAVP", "SDES": []any{"off"}},
			want: []string{"RTP/AVP"}, wantNot: []string{"a=crypto"}},
		{name: "avpf", extra: map[string]any{"transport-protocol": "RTP/AVPF", "rtcp-mux": []any{"offer"}},
			want: []string{"RTP/AVPF", "a=rtcp-mux"}},
		{name: "nothing to convert", extra: map[string]any{"transport-protocol": "UDP/TLS/RTP/SAVPF"}, errorHas: "no protocol conversion"},
		{name: "every codec stripped", extra: map[string]any{"flags": []any{"codec-strip-opus", "codec-strip-PCMU"}}, errorHas: "no codec in common"},
	}
	for i, tc := range cases {
		req := map[string]any{"command": "offer", "call-id": fmt.Sprintf("flags-%d", i), "from-tag": "f", "sdp": browser, "transport-protocol": "RTP/AVP"}
		for k, v := range tc.extra {
			req[k] = v
		}
		res := ngc.do(req)
		if tc.errorHas != "" {
			if res["result"] != "error" || !strings.Contains(fmt.Sprint(res["error-reason"]), tc.errorHas) {
				t.Errorf("%s: %v, want an error with %q", tc.name, res, tc.errorHas)
			}
			continue
		}
		out, _ := res["sdp"].(string)
		if res["result"] != "ok" {
			t.Errorf("%s: %v", tc.name, res)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: offer lacks %q:\n%s", tc.name, w, out)
			}
		}
		for _, w := range tc.wantNot {
			if strings.Contains(out, w) {
				t.Errorf("%s: offer has %q:\n%s", tc.name, w, out)
			}
		}
		ngc.ok(map[string]any{"command": "delete", "call-id": fmt.Sprintf("flags-%d", i)})
	}
	waitFor(t, "calls to end", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// TestNGHostile: commands out of order, for unknown or deleted calls, from
// a node that drains; none of them leaves a call or a port behind.
func TestNGHostile(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	fails := func(what string, d map[string]any, reason string) {
		t.Helper()
		res := ngc.do(d)
		if res["result"] != "error" || !strings.Contains(fmt.Sprint(res["error-reason"]), reason) {
			t.Errorf("%s: %v, want error %q", what, res, reason)
		}
	}
	peer := newPlainPeer(t)
	fails("answer without offer", map[string]any{"command": "answer", "call-id": "nope", "from-tag": "a", "to-tag": "b", "sdp": peer.sdp()}, "Unknown call-id")
	fails("delete unknown", map[string]any{"command": "delete", "call-id": "nope"}, "Unknown call-id")
	fails("query unknown", map[string]any{"command": "query", "call-id": "nope"}, "Unknown call-id")
	fails("garbage sdp", map[string]any{"command": "offer", "call-id": "g", "from-tag": "a", "sdp": "hello", "ICE": "force"}, "ng offer g")

	p := newPhone(t, "PCMU")
	offer := map[string]any{"command": "offer", "call-id": "h1", "from-tag": "a", "sdp": p.offer(), "transport-protocol": "RTP/AVP"}
	first := ngc.ok(offer)["sdp"]
	if again := ngc.ok(offer)["sdp"]; again != first {
		t.Error("the same offer again (new cookie) gave another SDP")
	}
	changed := map[string]any{"command": "offer", "call-id": "h1", "from-tag": "a", "sdp": peer.sdp(), "ICE": "force"}
	fails("re-offer", changed, "re-offer")
	fails("answer with another from-tag", map[string]any{"command": "answer", "call-id": "h1", "from-tag": "x", "to-tag": "b", "sdp": peer.sdp()}, "from-tag")
	fails("webrtc answer to a webrtc offer", map[string]any{"command": "answer", "call-id": "h1", "from-tag": "a", "to-tag": "b", "sdp": offer["sdp"]}, "plain RTP")
	ngc.ok(map[string]any{"command": "delete", "call-id": "h1"})
	fails("answer after delete", map[string]any{"command": "answer", "call-id": "h1", "from-tag": "a", "to-tag": "b", "sdp": peer.sdp()}, "Unknown call-id")
	fails("delete after delete", map[string]any{"command": "delete", "call-id": "h1"}, "Unknown call-id")
	// An offer for a deleted call-id is a new call, as in rtpengine.
	ngc.ok(offer)
	if r.ActiveCalls() != 1 {
		t.Fatalf("%d calls after a new offer, want 1", r.ActiveCalls())
	}

	// GET does not drain.
	if resp, err := http.Get("http://" + r.HTTPAddr().String() + "/admin/drain"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /admin/drain: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if r.Draining() {
		t.Fatal("GET /admin/drain drained the node")
	}
	// Draining: new offers are refused, /healthz says 503, the call goes on.
	resp, err := http.Post("http://"+r.HTTPAddr().String()+"/admin/drain", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /admin/drain: %v %v", resp, err)
	}
	resp.Body.Close()
	fails("offer while draining", map[string]any{"command": "offer", "call-id": "h2", "from-tag": "a", "sdp": offer["sdp"], "transport-protocol": "RTP/AVP"}, "Parallel session limit reached")
	if resp, err := http.Get("http://" + r.HTTPAddr().String() + "/healthz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while draining: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	ngc.ok(map[string]any{"command": "query", "call-id": "h1"})
	ngc.ok(map[string]any{"command": "delete", "call-id": "h1"})
	waitFor(t, "calls to end", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
}

// TestNGTranscode: a browser that offers only Opus reaches a PCMU-only SIP
// side because the proxy asked for codec transcode-PCMU (and stripped
// Opus); tones pass both ways through the transcoder.
func TestNGTranscode(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	p := newPhone(t, "opus")
	res := ngc.ok(map[string]any{
		"command": "offer", "call-id": "ng-tc", "from-tag": "caller", "sdp": p.offer(),
		"transport-protocol": "RTP/AVP", "ICE": "remove", "codec": map[string]any{"transcode": []any{"PCMU"}, "strip": []any{"opus"}},
	})
	_, po, err := sdp.Parse([]byte(res["sdp"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := po.Find("PCMU"); !ok || len(po.Codecs) != 2 {
		t.Fatalf("offer to the SIP side: %v, want PCMU and telephone-event", po.Codecs)
	}
	peer := startPlainPeer(t, true)
	res = ngc.ok(map[string]any{
		"command": "answer", "call-id": "ng-tc", "from-tag": "caller", "to-tag": "callee", "sdp": peer.sdp(),
		"transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force",
	})
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: res["sdp"].(string)}); err != nil {
		t.Fatal(err)
	}
	connect(t, p)
	ref := tone.Generate([]float64{400, 1000}, 48000, 48000*2, 0.25)
	p.sendOpusTone(t, ref)
	back := decodeOpus(t, p.collect(time.Second))
	var atSIP []int16
	for b := range audioPayloads(peer.got) {
		pcm := make([]int16, len(b))
		transcode.MulawDecode(pcm, b)
		atSIP = append(atSIP, pcm...)
	}
	atSIP = atSIP[min(len(atSIP), 4000):] // past start-up
	for _, f := range []float64{400, 1000} {
		if !tone.Detect(atSIP, 8000, f) {
			t.Errorf("%v Hz not detected on the SIP side (%d samples)", f, len(atSIP))
		}
		if len(back) < 48000 || !tone.Detect(back[24000:], 48000, f) {
			t.Errorf("%v Hz not detected back at the browser (%d samples)", f, len(back))
		}
	}
	relayCallID := r.ngSession("ng-tc").c.id
	ngc.ok(map[string]any{"command": "delete", "call-id": "ng-tc"})
	waitFor(t, "the CDR", 5*time.Second, func() bool {
		rec, err := r.CDR().Query(context.Background(), relayCallID)
		if err != nil || rec.EndCause == "" || rec.EndCause == "in_progress" {
			return false
		}
		if rec.Mode != mediaplan.ModeTranscode || rec.SIPCodec != "PCMU" || rec.WebRTCCodec != "opus" {
			t.Fatalf("cdr: mode %s, codecs %s/%s", rec.Mode, rec.WebRTCCodec, rec.SIPCodec)
		}
		return true
	})
}

// TestNGOutOfPorts: with the port range used up, an offer gets rtpengine's
// "Ran out of ports" (Kamailio then tries another node), and nothing leaks.
func TestNGOutOfPorts(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.NG.Listen = "127.0.0.1:0"
		c.Media.PortMax = c.Media.PortMin + 1 // one RTP/RTCP pair
	})
	ngc := newNGClient(t, r)
	p := newPhone(t, "PCMU")
	offer := map[string]any{"command": "offer", "call-id": "p1", "from-tag": "a", "sdp": p.offer(), "transport-protocol": "RTP/AVP"}
	ngc.ok(offer)
	offer["call-id"] = "p2"
	if res := ngc.do(offer); res["result"] != "error" || res["error-reason"] != "Ran out of ports" {
		t.Fatalf("offer with no ports left: %v", res)
	}
	ngc.ok(map[string]any{"command": "delete", "call-id": "p1"})
	waitFor(t, "calls to end", 5*time.Second, func() bool { return r.ActiveCalls() == 0 && r.PortsInUse() == 0 })
	offer["call-id"] = "p3"
	ngc.ok(offer) // the pair is free again
}
