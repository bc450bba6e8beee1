package ngnode

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/ng"
)

// fakeHost and fakeCall stand in for the relay: what a session does to
// its call is recorded, and the SDP it returns is fixed.
type fakeHost struct {
	draining bool
	calls    []*fakeCall
}

func (h *fakeHost) Draining() bool          { return h.draining }
func (h *fakeHost) Metrics() *metrics.Relay { return nil }
func (h *fakeHost) NewCall(s *Session, route *config.Trunk) Call {
	c := &fakeCall{route: route, ended: make(chan struct{})}
	h.calls = append(h.calls, c)
	return c
}

type fakeCall struct {
	route    *config.Trunk
	offers   int
	answered string
	cause    string
	ended    chan struct{}
}

func (c *fakeCall) Offer(*Session, *ng.Request, sdp.Audio) (string, error) {
	c.offers++
	return "relay-offer", nil
}

func (c *fakeCall) Answer(*Session, *ng.Request, sdp.Audio, bool) (string, error) {
	return "relay-answer", nil
}
func (c *fakeCall) Answered(to string)      { c.answered = to }
func (c *fakeCall) FollowAddress(sdp.Audio) {}
func (c *fakeCall) Hangup(cause string) {
	if c.cause == "" {
		c.cause = cause
		close(c.ended)
	}
}
func (c *fakeCall) Ended() <-chan struct{} { return c.ended }
func (c *fakeCall) Stats() Stats           { return Stats{} }
func (c *fakeCall) Log() *slog.Logger      { return slog.New(slog.DiscardHandler) }

func plainOffer(port int) string {
	return string(sdp.Offer{SessionID: 1, Version: 1, Addr: netip.MustParseAddr("127.0.0.1"), Port: port,
		Codecs: []sdp.Codec{mediaplan.SIPCodecs["pcmu"]}}.Marshal())
}

// TestSessionCommands: a retransmitted offer gets the same SDP without a
// second call, a changed one is refused, an answer must come from the
// offer's from-tag, and delete ends the call.
func TestSessionCommands(t *testing.T) {
	h := &fakeHost{}
	n := New(h, time.Now(), time.Minute)
	offer := &ng.Request{CallID: "c1", FromTag: "a", SDP: plainOffer(4000), Flags: ng.Flags{ICE: "force"}}
	out, err := n.Offer(offer)
	if err != nil || out != "relay-offer" {
		t.Fatalf("offer: %q %v", out, err)
	}
	if again, err := n.Offer(offer); err != nil || again != out || len(h.calls) != 1 || h.calls[0].offers != 1 {
		t.Fatalf("retransmitted offer: %q %v, %d calls", again, err, len(h.calls))
	}
	changed := *offer
	changed.SDP = plainOffer(4002)
	if _, err := n.Offer(&changed); !errors.Is(err, errReoffer) {
		t.Fatalf("changed offer: %v, want %v", err, errReoffer)
	}
	if _, err := n.Answer(&ng.Request{CallID: "c1", FromTag: "x", ToTag: "b"}); !errors.Is(err, errFromTag) {
		t.Fatalf("answer from another from-tag: %v", err)
	}
	if ans, err := n.Answer(&ng.Request{CallID: "c1", FromTag: "a", ToTag: "b"}); err != nil || ans != "relay-answer" || h.calls[0].answered != "b" {
		t.Fatalf("answer: %q %v, answered by %q", ans, err, h.calls[0].answered)
	}
	if ids := n.List(10); len(ids) != 1 || ids[0] != "c1" {
		t.Fatalf("list %v", ids)
	}
	if _, err := n.Delete(&ng.Request{CallID: "c1"}); err != nil || h.calls[0].cause != "normal" {
		t.Fatalf("delete: %v, cause %q", err, h.calls[0].cause)
	}
	if _, err := n.Query(&ng.Request{CallID: "nope"}); !errors.Is(err, errUnknownCall) {
		t.Fatalf("query of an unknown call: %v", err)
	}
}

// TestOfferRefused: a draining node and an offer that asks for no
// protocol conversion get errors and no call.
func TestOfferRefused(t *testing.T) {
	h := &fakeHost{draining: true}
	n := New(h, time.Now(), time.Minute)
	req := &ng.Request{CallID: "c1", FromTag: "a", SDP: plainOffer(4000), Flags: ng.Flags{ICE: "force"}}
	if _, err := n.Offer(req); !errors.Is(err, errDraining) {
		t.Fatalf("draining: %v", err)
	}
	h.draining = false
	req.Flags = ng.Flags{}
	if _, err := n.Offer(req); !errors.Is(err, errSameProto) || len(h.calls) != 0 {
		t.Fatalf("plain to plain: %v, %d calls", err, len(h.calls))
	}
}

// TestRoute: the stand-in trunk follows the codec and SDES flags.
func TestRoute(t *testing.T) {
	proxy := netip.MustParseAddrPort("127.0.0.1:5060")
	codecs := []sdp.Codec{mediaplan.SIPCodecs["pcmu"], mediaplan.SIPCodecs["pcma"], mediaplan.DTMF8k}
	r := Route(proxy, ng.Flags{}, codecs, "RTP/AVP")
	if r.Name != "ng:127.0.0.1:5060" || strings.Join(r.Codecs, ",") != "PCMU,PCMA" || r.MediaMode != mediaplan.ModePassthrough || r.SRTP != mediaplan.SRTPOff {
		t.Fatalf("plain route %+v", r)
	}
	f := ng.Flags{Codec: ng.CodecFlags{Strip: []string{"PCMA"}, Mask: []string{"opus"}, Transcode: []string{"opus"}}}
	r = Route(proxy, f, codecs, "RTP/SAVP")
	if strings.Join(r.Codecs, ",") != "PCMU,opus" || r.MediaMode != mediaplan.ModeTranscode || r.SRTP != mediaplan.SRTPRequired {
		t.Fatalf("masked transcode route %+v", r)
	}
}
