package benchmarks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// sipWS is a small SIP UAC over one WebSocket, shaped like a browser's
// (JsSIP-style Via/Contact on a .invalid host). Many calls share one
// connection; a single reader goroutine hands responses to the waiting call.
type sipWS struct {
	ws      *wsConn
	host    string // our .invalid Via/Contact host
	log     *slog.Logger
	onBye   func(callID string) // the relay hung up a call
	mu      sync.Mutex
	pending map[string]chan *sip.Response // "callid cseq-method"
	closed  chan struct{}
	err     error
}

func randToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newSipWS(ctx context.Context, wsURL string, log *slog.Logger, onBye func(string)) (*sipWS, error) {
	ws, err := dialWS(ctx, wsURL, "sip")
	if err != nil {
		return nil, err
	}
	s := &sipWS{ws: ws, host: randToken(5) + ".invalid", log: log, onBye: onBye,
		pending: map[string]chan *sip.Response{}, closed: make(chan struct{})}
	go s.readLoop()
	return s, nil
}

func (s *sipWS) Close() { _ = s.ws.Close() }

func (s *sipWS) readLoop() {
	defer close(s.closed)
	for {
		data, err := s.ws.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		msg, err := sip.ParseMessage(data)
		if err != nil {
			s.log.Warn("bench ws: unparsable SIP message", "err", err)
			continue
		}
		switch m := msg.(type) {
		case *sip.Response:
			key := m.CallID().Value() + " " + string(m.CSeq().MethodName)
			s.mu.Lock()
			ch := s.pending[key]
			s.mu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
		case *sip.Request:
			s.answerRequest(m)
		}
	}
}

// answerRequest replies to in-dialog requests from the relay. A BYE means
// the relay ended the call: the runner counts it as dropped.
func (s *sipWS) answerRequest(req *sip.Request) {
	if req.IsAck() {
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	_ = s.ws.WriteText([]byte(res.String()))
	if req.Method == sip.BYE && s.onBye != nil {
		s.onBye(req.CallID().Value())
	}
}

// sipDialog is what a call needs to send ACK and BYE.
type sipDialog struct {
	callID, fromTag, toTag string
	user                   string
	target                 string   // remote Contact URI
	routes                 []string // route set for in-dialog requests
}

func (s *sipWS) await(key string) (chan *sip.Response, func()) {
	ch := make(chan *sip.Response, 8)
	s.mu.Lock()
	s.pending[key] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.pending, key)
		s.mu.Unlock()
	}
}

// Invite sends INVITE sip:user@127.0.0.1 with the SDP offer and waits for the
// final response. On 2xx it sends the ACK. code is the final status (0 if
// none came).
func (s *sipWS) Invite(ctx context.Context, callID, user, offer string) (d *sipDialog, answer string, code int, err error) {
	d = &sipDialog{callID: callID, fromTag: randToken(6), user: user}
	branch := "z9hG4bK" + randToken(8)
	ruri := "sip:" + user + "@127.0.0.1"
	var b strings.Builder
	fmt.Fprintf(&b, "INVITE %s SIP/2.0\r\n", ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/WS %s;branch=%s\r\n", s.host, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:bench@127.0.0.1>;tag=%s\r\n", d.fromTag)
	fmt.Fprintf(&b, "To: <%s>\r\n", ruri)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	b.WriteString("CSeq: 1 INVITE\r\n")
	fmt.Fprintf(&b, "Contact: <sip:bench@%s;transport=ws>\r\n", s.host)
	b.WriteString("Allow: INVITE,ACK,CANCEL,BYE,OPTIONS\r\nUser-Agent: mediarelay-bench\r\nContent-Type: application/sdp\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(offer), offer)

	ch, done := s.await(callID + " INVITE")
	defer done()
	if err := s.ws.WriteText([]byte(b.String())); err != nil {
		return nil, "", 0, fmt.Errorf("send INVITE: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, "", 0, fmt.Errorf("INVITE %s: %w", callID, ctx.Err())
		case <-s.closed:
			return nil, "", 0, fmt.Errorf("INVITE %s: websocket closed: %v", callID, s.err)
		case res := <-ch:
			if res.StatusCode < 200 {
				continue
			}
			if to := res.To(); to != nil {
				d.toTag, _ = to.Params.Get("tag")
			}
			if res.StatusCode >= 300 {
				// ACK for a non-2xx final response belongs to the INVITE transaction.
				_ = s.ws.WriteText([]byte(s.ackText(d, ruri, branch, nil)))
				return nil, "", res.StatusCode, fmt.Errorf("INVITE %s: %d %s", callID, res.StatusCode, res.Reason)
			}
			if c := res.Contact(); c != nil {
				d.target = c.Address.String()
			} else {
				d.target = ruri
			}
			rr := res.GetHeaders("Record-Route")
			for i := len(rr) - 1; i >= 0; i-- {
				d.routes = append(d.routes, rr[i].Value())
			}
			if err := s.ws.WriteText([]byte(s.ackText(d, d.target, "z9hG4bK"+randToken(8), d.routes))); err != nil {
				return nil, "", res.StatusCode, fmt.Errorf("send ACK: %w", err)
			}
			return d, string(res.Body()), res.StatusCode, nil
		}
	}
}

func (s *sipWS) headers(b *strings.Builder, d *sipDialog, method string, cseq int, branch string, routes []string) {
	fmt.Fprintf(b, "Via: SIP/2.0/WS %s;branch=%s\r\n", s.host, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	for _, r := range routes {
		fmt.Fprintf(b, "Route: %s\r\n", r)
	}
	fmt.Fprintf(b, "From: <sip:bench@127.0.0.1>;tag=%s\r\n", d.fromTag)
	to := "<sip:" + d.user + "@127.0.0.1>"
	if d.toTag != "" {
		to += ";tag=" + d.toTag
	}
	fmt.Fprintf(b, "To: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n", to, d.callID, cseq, method)
}

func (s *sipWS) ackText(d *sipDialog, ruri, branch string, routes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\n", ruri)
	s.headers(&b, d, "ACK", 1, branch, routes)
	return b.String()
}

// Bye ends the dialog and waits for the final response.
func (s *sipWS) Bye(ctx context.Context, d *sipDialog) error {
	var b strings.Builder
	fmt.Fprintf(&b, "BYE %s SIP/2.0\r\n", d.target)
	s.headers(&b, d, "BYE", 2, "z9hG4bK"+randToken(8), d.routes)
	ch, done := s.await(d.callID + " BYE")
	defer done()
	if err := s.ws.WriteText([]byte(b.String())); err != nil {
		return fmt.Errorf("send BYE: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("BYE %s: %w", d.callID, ctx.Err())
		case <-s.closed:
			return errors.New("BYE: websocket closed")
		case res := <-ch:
			if res.StatusCode < 200 {
				continue
			}
			if res.StatusCode >= 300 {
				return errors.New("BYE: " + strconv.Itoa(res.StatusCode) + " " + res.Reason)
			}
			return nil
		}
	}
}
