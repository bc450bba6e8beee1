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
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/mediarelay/mediarelay/pkg/token"
)

// sipWS is a small SIP UAC over one WebSocket, shaped like a browser's
// (JsSIP-style Via/Contact on a .invalid host). Many calls share one
// connection; a single reader goroutine hands responses to the waiting call.
type sipWS struct {
	ws      *wsConn
	creds   Credentials // answer the relay's 407 with these
	host    string      // our .invalid Via/Contact host
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

func newSipWS(ctx context.Context, wsURL string, creds Credentials, log *slog.Logger, onBye func(string)) (*sipWS, error) {
	ws, err := dialWS(ctx, wsURL, "sip")
	if err != nil {
		return nil, err
	}
	s := &sipWS{ws: ws, creds: creds, host: randToken(5) + ".invalid", log: log, onBye: onBye,
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
	cseq                   int      // of the INVITE that made the dialog
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
// final response, answering one 407 (or 401) challenge with the
// connection's credentials. On 2xx it sends the ACK. code is the final
// status (0 if none came). caller names the call's user for token
// credentials.
func (s *sipWS) Invite(ctx context.Context, callID, user, caller, offer string) (d *sipDialog, answer string, code int, err error) {
	d = &sipDialog{callID: callID, fromTag: randToken(6), user: user, cseq: 1}
	ruri := "sip:" + user + "@127.0.0.1"
	ch, done := s.await(callID + " INVITE")
	defer done()
	var auth string
	for {
		branch := "z9hG4bK" + randToken(8)
		if err := s.ws.WriteText([]byte(s.inviteText(d, ruri, branch, auth, offer))); err != nil {
			return nil, "", 0, fmt.Errorf("send INVITE: %w", err)
		}
		res, err := s.final(ctx, ch, callID)
		if err != nil {
			return nil, "", 0, err
		}
		if to := res.To(); to != nil {
			d.toTag, _ = to.Params.Get("tag")
		}
		if res.StatusCode >= 300 {
			// ACK for a non-2xx final response belongs to the INVITE transaction.
			_ = s.ws.WriteText([]byte(s.ackText(d, ruri, branch, nil)))
			if (res.StatusCode == 407 || res.StatusCode == 401) && auth == "" && !s.creds.empty() {
				if auth, err = s.creds.authorize(res, "INVITE", ruri, caller); err != nil {
					return nil, "", int(res.StatusCode), fmt.Errorf("INVITE %s: %w", callID, err)
				}
				d.cseq++
				d.toTag = ""
				continue
			}
			return nil, "", int(res.StatusCode), fmt.Errorf("INVITE %s: %d %s", callID, res.StatusCode, res.Reason)
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
			return nil, "", int(res.StatusCode), fmt.Errorf("send ACK: %w", err)
		}
		return d, string(res.Body()), int(res.StatusCode), nil
	}
}

func (s *sipWS) inviteText(d *sipDialog, ruri, branch, auth, offer string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "INVITE %s SIP/2.0\r\n", ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/WS %s;branch=%s\r\n", s.host, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:bench@127.0.0.1>;tag=%s\r\n", d.fromTag)
	fmt.Fprintf(&b, "To: <%s>\r\n", ruri)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", d.callID)
	fmt.Fprintf(&b, "CSeq: %d INVITE\r\n", d.cseq)
	fmt.Fprintf(&b, "Contact: <sip:bench@%s;transport=ws>\r\n", s.host)
	if auth != "" {
		b.WriteString(auth + "\r\n")
	}
	b.WriteString("Allow: INVITE,ACK,CANCEL,BYE,OPTIONS\r\nUser-Agent: mediarelay-bench\r\nContent-Type: application/sdp\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(offer), offer)
	return b.String()
}

// final waits for the INVITE's final response.
func (s *sipWS) final(ctx context.Context, ch chan *sip.Response, callID string) (*sip.Response, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("INVITE %s: %w", callID, ctx.Err())
		case <-s.closed:
			return nil, fmt.Errorf("INVITE %s: websocket closed: %v", callID, s.err)
		case res := <-ch:
			if res.StatusCode >= 200 {
				return res, nil
			}
		}
	}
}

// Credentials are what the bench answers the relay's digest challenges
// with: a user and password, or a token secret from which it mints
// time-limited credentials (coturn REST API convention) for a user per call.
type Credentials struct {
	User, Password string
	TokenSecret    string
}

func (c Credentials) empty() bool { return c.User == "" && c.TokenSecret == "" }

// authorize answers res's challenge (MD5 when offered, for the widest
// support) as the header line to add to the retried request.
func (c Credentials) authorize(res *sip.Response, method, uri, caller string) (string, error) {
	hdr, out := "Proxy-Authenticate", "Proxy-Authorization"
	if res.StatusCode == 401 {
		hdr, out = "WWW-Authenticate", "Authorization"
	}
	var chal *digest.Challenge
	for _, h := range res.GetHeaders(hdr) {
		ch, err := digest.ParseChallenge(h.Value())
		if err != nil {
			continue
		}
		if chal == nil || strings.EqualFold(ch.Algorithm, "MD5") {
			chal = ch
		}
	}
	if chal == nil {
		return "", fmt.Errorf("%d without a usable %s", res.StatusCode, hdr)
	}
	user, password := c.User, c.Password
	if c.TokenSecret != "" {
		name := c.User
		if name == "" {
			name = caller
		}
		user, password = token.Mint(c.TokenSecret, name, time.Now().Add(time.Hour))
	}
	cred, err := digest.Digest(chal, digest.Options{Method: method, URI: uri, Username: user, Password: password, Count: 1})
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	return out + ": " + cred.String(), nil
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
	s.headers(&b, d, "ACK", d.cseq, branch, routes)
	return b.String()
}

// Bye ends the dialog and waits for the final response.
func (s *sipWS) Bye(ctx context.Context, d *sipDialog) error {
	var b strings.Builder
	fmt.Fprintf(&b, "BYE %s SIP/2.0\r\n", d.target)
	s.headers(&b, d, "BYE", d.cseq+1, "z9hG4bK"+randToken(8), d.routes)
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
