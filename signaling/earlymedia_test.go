package signaling

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// TestTrunkForkingEarlyMedia: the trunk forks, answering 180 from one
// branch (To-tag A) and 183 with SDP from another (To-tag B) whose media
// the browser hears before the answer; the 200 from branch B wins.
func TestTrunkForkingEarlyMedia(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	media, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer media.Close()
	ua, _ := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	defer ua.Close()
	srv, _ := sipgo.NewServer(ua)
	answered := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var relayRTP netip.AddrPort
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		_, offer, _ := sdp.Parse(req.Body())
		mu.Lock()
		relayRTP = netip.AddrPortFrom(offer.Addr, uint16(offer.Port))
		mu.Unlock()
		body := sdp.Offer{SessionID: 5, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"),
			Port: media.LocalAddr().(*net.UDPAddr).Port, Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"]}}.Marshal()
		withTag := func(code int, reason, tag string, body []byte) *sip.Response {
			res := sip.NewResponseFromRequest(req, code, reason, body)
			res.To().Params.Remove("tag")
			res.To().Params.Add("tag", tag)
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{User: "b", Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port}})
			if body != nil {
				res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			}
			return res
		}
		_ = tx.Respond(withTag(180, "Ringing", "branchA", nil))
		_ = tx.Respond(withTag(183, "Session Progress", "branchB", body))
		// Early media: announce frames from branch B for 1.5 s.
		go func() {
			for i := 0; i < 75; i++ {
				mu.Lock()
				dst := relayRTP
				mu.Unlock()
				pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(160 * i), SSRC: 7}, Payload: make([]byte, 160)}
				copy(pkt.Payload, "early")
				b, _ := pkt.Marshal()
				_, _ = media.WriteToUDPAddrPort(b, dst)
				time.Sleep(20 * time.Millisecond)
			}
			_ = tx.Respond(withTag(200, "OK", "branchB", body))
			once.Do(func() { close(answered) })
		}()
		<-answered
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = srv.ServeUDP(pc) }()

	r := startRelay(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "forking", Match: ".*", Address: "sip:" + pc.LocalAddr().String(), Codecs: []string{"PCMU"}}}
	})
	p := newPhone(t, "PCMU")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host, port := splitHostPort(r.HTTPAddr().String())
	dcs, err := p.dua.Invite(ctx, sip.Uri{User: "5000", Host: host, Port: port, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}},
		[]byte(p.offer()), sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	var provs []int
	var early atomic.Int32
	err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		provs = append(provs, int(res.StatusCode))
		if res.StatusCode == 183 && len(res.Body()) > 0 {
			if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(res.Body())}); err != nil {
				t.Errorf("183 sdp: %v", err)
			}
			// Count early frames until the answer.
			go func() {
				for {
					select {
					case pkt := <-p.received:
						select {
						case <-answered:
							return
						default:
						}
						if string(pkt.Payload[:5]) == "early" {
							early.Add(1)
						}
					case <-answered:
						return
					}
				}
			}()
		}
		return nil
	}})
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	_ = dcs.Ack(ctx)
	p.dcs = dcs
	if len(provs) < 2 || provs[len(provs)-1] != 200 {
		t.Fatalf("responses %v", provs)
	}
	time.Sleep(100 * time.Millisecond)
	if n := early.Load(); n < 20 {
		t.Fatalf("browser heard %d early-media frames before the answer", n)
	}
	if tag, _ := dcs.InviteResponse.To().Params.Get("tag"); tag == "" {
		t.Fatal("the browser's dialog has no to-tag")
	}
	p.hangup()
	waitFor(t, "cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
}
