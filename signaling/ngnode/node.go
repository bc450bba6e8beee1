// Package ngnode is the relay as a media node that SIP proxies (Kamailio,
// OpenSIPS) drive over rtpengine's ng protocol (signaling/ng): the
// sessions they set up, by their Call-ID, and what each command does to
// one — offer (a retransmitted one answered again, a changed one
// refused), answer (a retry or a second 2xx following the answerer's
// address), delete, query — and the node's statistics in rtpengine's
// shapes. Which side is WebRTC and which plain RTP follows from the offer
// and the flags (Route makes the stand-in trunk they ask for). The node
// also owns the ng control socket it serves them on (Listen, Close).
//
// The media of a session is the relay's call: the node asks its Host for
// one per offer and drives it through the small Call interface; it knows
// nothing of the B2BUA's Call.
package ngnode

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/logsafe"
	"github.com/mediarelay/mediarelay/signaling/ng"
)

// Direction is the CDR direction of a call set up over the ng protocol;
// its trunk column is "ng:" and the proxy's address.
const Direction = "ng"

// Errors of ng commands, as the proxy reads them in error-reason.
var (
	errUnknownCall = errors.New("Unknown call-id")
	// errDraining and ErrNoPorts are rtpengine's own words: Kamailio's
	// rtpengine module then tries the next node of the set instead of
	// failing the call ("Parallel session limit reached"; newer versions
	// also on "Ran out of ports").
	errDraining = errors.New("Parallel session limit reached")
	// ErrNoPorts is the error a Call's Offer gives when the relay's port
	// range is exhausted; the proxy gets it word for word.
	ErrNoPorts   = errors.New("Ran out of ports")
	errSameProto = errors.New("no protocol conversion asked (transport-protocol, ICE): only WebRTC <-> RTP calls are relayed over ng")
	errReoffer   = errors.New("re-offer with a changed SDP is not supported")
	errFromTag   = errors.New("from-tag does not match the offer's")
	errWebAnswer = errors.New("the answer must be plain RTP")
	errAnswerer2 = errors.New("a second answerer (to-tag) is not supported")
)

// Host is what the node needs of the relay.
type Host interface {
	// Draining says the relay refuses new calls: offers get rtpengine's
	// "session limit" error, so the proxy tries another node.
	Draining() bool
	// NewCall is the relay's call for session s, through route (the
	// stand-in trunk the offer's flags make), not yet set up.
	NewCall(s *Session, route *config.Trunk) Call
	// Metrics is the relay's counters, which Statistics reads.
	Metrics() *metrics.Relay
}

// Call is the relay's call behind a session: its legs, forwarding,
// statistics and CDR.
type Call interface {
	// Offer sets the call up for the offerer's SDP (offer, its audio,
	// with SIP-source-address applied to a plain one) and returns the
	// relay's SDP for the answerer. A failed offer has ended the call;
	// ErrNoPorts says the relay's port range is exhausted.
	Offer(s *Session, req *ng.Request, offer sdp.Audio) (string, error)
	// Answer applies the answerer's SDP (ans, its audio, on a session a
	// browser offered; req.SDP otherwise) and returns the relay's SDP for
	// the offerer. A failed first answer ends the call.
	Answer(s *Session, req *ng.Request, ans sdp.Audio, first bool) (string, error)
	// Answered marks the call answered by the party tagged to.
	Answered(to string)
	// FollowAddress moves the plain answerer's media to the address of
	// its SDP (a 183 then a 200, or a retry).
	FollowAddress(ans sdp.Audio)
	// Hangup ends the call with cause.
	Hangup(cause string)
	// Ended is closed when the call has ended.
	Ended() <-chan struct{}
	// Stats is the call's media so far.
	Stats() Stats
	// Log is the call's logger.
	Log() *slog.Logger
}

// Stats is a call's media as a session's query reports it.
type Stats struct {
	Web, Plain         media.LegStats
	WebPort, PlainPort int  // the relay's local ports (0: none yet)
	SRTP               bool // the plain side is SDES-SRTP
}

// Node is the relay's ng.Handler.
type Node struct {
	host        Host
	start       time.Time
	ringTimeout time.Duration

	mu       sync.Mutex
	sessions map[string]*Session // by the proxy's call-id

	srv *ng.Server // the control socket (Listen), until Close
}

// New is the node of a relay started at start; an offer not answered
// within ringTimeout ends, as a ringing B2BUA call would.
func New(h Host, start time.Time, ringTimeout time.Duration) *Node {
	return &Node{host: h, start: start, ringTimeout: ringTimeout, sessions: map[string]*Session{}}
}

// Session is the session the proxy named callID; nil if none.
func (n *Node) Session(callID string) *Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sessions[callID]
}

// Forget drops s once its call has ended (a later offer for its call-id
// is a new session).
func (n *Node) Forget(s *Session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sessions[s.callID] == s {
		delete(n.sessions, s.callID)
	}
}

// Offer creates the session and its call and returns the SDP for the
// other side.
func (n *Node) Offer(req *ng.Request) (string, error) {
	if s := n.Session(req.CallID); s != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.offerSDP == req.SDP && s.fromTag == req.FromTag {
			s.last = time.Now()
			return s.replySDP, nil // the proxy sent the same offer again (a new branch, a retry)
		}
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errReoffer)
	}
	if n.host.Draining() {
		return "", errDraining
	}
	_, offer, err := sdp.Parse([]byte(req.SDP))
	if err != nil {
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, err)
	}
	offerWeb := isWebRTC(offer)
	if req.Flags.WantsWebRTC(offerWeb) == offerWeb {
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errSameProto)
	}
	plainProto := req.Flags.TransportProtocol
	if !offerWeb {
		plainProto = strings.ToUpper(offer.Proto)
		offer = sourceAddress(offer, req.Flags)
	}
	if plainProto == "" {
		plainProto = "RTP/AVP"
	}
	s := &Session{
		callID:   req.CallID,
		fromTag:  req.FromTag,
		proxy:    req.Source,
		created:  time.Now(),
		labels:   map[string]string{},
		webOffer: offerWeb,
		offerSDP: req.SDP,
	}
	s.last = s.created
	if req.Flags.Label != "" {
		s.labels[req.FromTag] = req.Flags.Label
	}
	route := Route(req.Source, req.Flags, offer.Codecs, plainProto)
	c := n.host.NewCall(s, route)
	s.call = c

	// Register first so that a concurrent offer for the same call-id
	// finds this one; the session's lock holds it until the SDP is ready.
	s.mu.Lock()
	defer s.mu.Unlock()
	n.mu.Lock()
	if _, dup := n.sessions[req.CallID]; dup {
		n.mu.Unlock()
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errReoffer)
	}
	n.sessions[req.CallID] = s
	n.mu.Unlock()

	out, err := c.Offer(s, req, offer)
	if err != nil {
		if errors.Is(err, ErrNoPorts) {
			return "", err // exactly rtpengine's words
		}
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, err)
	}
	s.replySDP = out
	// An offer never answered (the proxy lost the call, or a flood of
	// offers) must not hold its ports: it ends as a ringing B2BUA call would.
	time.AfterFunc(n.ringTimeout, func() {
		s.mu.Lock()
		unanswered := s.answerSDP == ""
		s.mu.Unlock()
		if unanswered {
			c.Hangup(cdr.CauseNoAnswer)
		}
	})
	c.Log().Info("ng offer", "from_tag", logsafe.Truncate(req.FromTag, 64), "webrtc_offerer", offerWeb, "plain", plainProto, "codecs", strings.Join(route.Codecs, ","))
	return out, nil
}

// Answer applies the answerer's SDP and returns the SDP for the offerer.
func (n *Node) Answer(req *ng.Request) (string, error) {
	s := n.Session(req.CallID)
	if s == nil {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errUnknownCall)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.call
	select {
	case <-c.Ended():
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errUnknownCall)
	default:
	}
	if req.FromTag != s.fromTag {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errFromTag)
	}
	if s.answerSDP != "" && s.toTag == req.ToTag {
		// 183 then 200, or a retry: the media is set; follow an address change.
		if !s.webOffer {
			return s.answerSDP, nil
		}
		if _, ans, err := sdp.Parse([]byte(req.SDP)); err == nil {
			c.FollowAddress(sourceAddress(ans, req.Flags))
		}
		return s.answerSDP, nil
	}
	if s.answerSDP != "" && !s.webOffer {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errAnswerer2)
	}
	var ans sdp.Audio
	if s.webOffer {
		_, a, err := sdp.Parse([]byte(req.SDP))
		if err != nil {
			return "", fmt.Errorf("ng answer %s: %w", req.CallID, err)
		}
		if isWebRTC(a) {
			return "", fmt.Errorf("ng answer %s: %w", req.CallID, errWebAnswer)
		}
		ans = sourceAddress(a, req.Flags)
	}
	first := s.answerSDP == ""
	out, err := c.Answer(s, req, ans, first)
	if err != nil {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, err)
	}
	s.answerSDP = out
	s.toTag = req.ToTag
	s.last = time.Now()
	if req.Flags.Label != "" {
		s.labels[req.ToTag] = req.Flags.Label
	}
	if first {
		c.Answered(req.ToTag)
	}
	return s.answerSDP, nil
}

// Delete ends the call and returns its statistics.
func (n *Node) Delete(req *ng.Request) (map[string]any, error) {
	s := n.Session(req.CallID)
	if s == nil {
		return nil, fmt.Errorf("ng delete %s: %w", req.CallID, errUnknownCall)
	}
	s.mu.Lock()
	s.last = time.Now()
	answered := s.answerSDP != ""
	s.mu.Unlock()
	cause := cdr.CauseNormalBrowser
	if !answered {
		cause = cdr.CauseCancelled
	}
	s.call.Hangup(cause)
	return s.stats(), nil
}

// Query returns the call's statistics.
func (n *Node) Query(req *ng.Request) (map[string]any, error) {
	s := n.Session(req.CallID)
	if s == nil {
		return nil, fmt.Errorf("ng query %s: %w", req.CallID, errUnknownCall)
	}
	return s.stats(), nil
}

// List returns the call-ids of the ng calls.
func (n *Node) List(limit int) []string {
	n.mu.Lock()
	ids := make([]string, 0, len(n.sessions))
	for id := range n.sessions {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	return ids
}

// Statistics returns the node's figures from the same counters /metrics
// serves, brought up to date as a scrape would.
func (n *Node) Statistics() map[string]any {
	n.mu.Lock()
	ngCalls := len(n.sessions)
	n.mu.Unlock()
	m := n.host.Metrics()
	active := int64(m.Sum("mediarelay_calls_active"))
	ended := map[string]any{}
	var total uint64
	for _, cause := range append(metrics.EndCauses, cdr.CauseNormalTrunk) {
		c := uint64(m.Sum("mediarelay_calls_total", "cause", cause))
		ended[cause] = c
		total += c
	}
	leg := func(name string) map[string]any {
		count := func(metric, dir string) uint64 { return uint64(m.Sum(metric, "leg", name, "dir", dir)) }
		return map[string]any{
			"packets_in":  count("mediarelay_packets_total", metrics.DirIn),
			"packets_out": count("mediarelay_packets_total", metrics.DirOut),
			"bytes_in":    count("mediarelay_bytes_total", metrics.DirIn),
			"bytes_out":   count("mediarelay_bytes_total", metrics.DirOut),
		}
	}
	return map[string]any{
		"currentstatistics": map[string]any{
			"sessionsown":     active,
			"sessionsforeign": 0,
			"sessionstotal":   active,
			"sessionsng":      ngCalls,
		},
		"totalstatistics": map[string]any{
			"uptime":          int64(time.Since(n.start).Seconds()),
			"managedsessions": total,
			"timeoutsessions": uint64(m.Sum("mediarelay_calls_total", "cause", cdr.CauseMediaTimeout)),
			"endcauses":       ended,
			"draining":        n.host.Draining(),
		},
		"legs": map[string]any{
			metrics.LegWebRTC: leg(metrics.LegWebRTC),
			metrics.LegSIP:    leg(metrics.LegSIP),
		},
	}
}
