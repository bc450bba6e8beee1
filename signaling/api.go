package signaling

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/metrics"
)

// endAdminHangup is the end cause of a call an operator hung up through
// DELETE /api/calls/{id}.
const endAdminHangup = "admin_hangup"

// Who ended a call, as its CDR's ended_by says.
const (
	endedByBrowser = "browser"
	endedByTrunk   = "trunk"
	endedByRelay   = "relay"
)

// CallView is a call in progress as the call API shows it.
type CallView struct {
	ID        string `json:"id"`
	From      string `json:"from"`
	To        string `json:"to"`
	Trunk     string `json:"trunk"`
	Direction string `json:"direction"` // outbound (browser to trunk) or inbound
	Transport string `json:"transport"` // the trunk leg's SIP transport: udp, tcp, tls
	// State is "ringing" until the call is answered, then "answered".
	State  string     `json:"state"`
	Start  time.Time  `json:"start"`
	Answer *time.Time `json:"answer,omitempty"`
	// Mode is passthrough or transcode; "pending" before media is negotiated.
	Mode   string             `json:"mode"`
	Codecs map[string]string  `json:"codecs"` // by leg: webrtc, sip
	Legs   map[string]LegView `json:"legs"`   // by leg: webrtc, sip
}

// LegView is one media leg's transport and counters so far.
type LegView struct {
	// Transport is udp4, udp6, tcp4 or tcp6 (ICE-TCP); "" before media.
	Transport  string  `json:"transport"`
	PacketsIn  uint64  `json:"packets_in"`
	PacketsOut uint64  `json:"packets_out"`
	Loss       float64 `json:"loss"` // fraction of packets lost towards the relay, 0..1
	JitterMs   float64 `json:"jitter_ms"`
}

// view is the call as the API shows it; safe from any goroutine.
func (c *Call) view() CallView {
	v := CallView{
		ID: c.id, From: c.from, To: c.to, Trunk: c.trunkName(), Direction: c.direction,
		State: "ringing", Start: c.start.UTC(), Mode: "pending",
		Codecs: map[string]string{}, Legs: map[string]LegView{},
	}
	if c.route != nil {
		v.Transport = c.route.Transport
	}
	if a := c.answerTime(); !a.IsZero() {
		a = a.UTC()
		v.State, v.Answer = "answered", &a
	}
	if m := c.active.Load(); m != nil {
		v.Mode = m.plan.Mode
		v.Codecs[metrics.LegWebRTC] = m.plan.BrowserCodec
		v.Codecs[metrics.LegSIP] = m.plan.SIPCodec.Name
	}
	if c.mediaStarted() {
		if web := c.webLeg(); web != nil {
			v.Legs[metrics.LegWebRTC] = legView(web.Transport(), web.Stats())
		}
		if sip := c.sipLeg(); sip != nil {
			v.Legs[metrics.LegSIP] = legView(sip.Transport(), sip.Stats())
		}
	}
	return v
}

func legView(transport string, s media.LegStats) LegView {
	return LegView{Transport: transport, PacketsIn: s.PacketsIn, PacketsOut: s.PacketsOut, Loss: lossFraction(s), JitterMs: s.Jitter}
}

// adminHangup ends the call on both legs on an operator's behalf; who
// goes to the CDR's ended_by.
func (c *Call) adminHangup(who string) {
	c.endedBy.CompareAndSwap(nil, &who)
	c.hangup(endAdminHangup, 0, "")
}

// whoEnded is a CDR's ended_by: the operator who hung the call up (nil
// if none), or else the side its end cause points at.
func whoEnded(cause string, operator *string) string {
	if operator != nil {
		return *operator
	}
	switch cause {
	case endNormalBrowser, endCancelled:
		return endedByBrowser
	case endNormalTrunk, endBusy, endRejected:
		return endedByTrunk
	}
	return endedByRelay
}

// adminAllowed decides whether a call API request may proceed. With a
// token configured the request must carry it as a bearer token (compared
// in constant time); without one only loopback clients are served. remote
// is the connection's peer address, never a header's claim. Without a
// token the request's Host must name loopback too: a page whose own host
// name was re-pointed at 127.0.0.1 (DNS rebinding) is not let in.
func adminAllowed(token string, remote netip.Addr, authorization, host string) int {
	if token == "" {
		if remote.Unmap().IsLoopback() && loopbackHost(host) {
			return http.StatusOK
		}
		return http.StatusForbidden
	}
	scheme, got, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return http.StatusUnauthorized
	}
	// Hashing first makes the comparison independent of the lengths.
	want, have := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(strings.TrimSpace(got)))
	if subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		return http.StatusUnauthorized
	}
	return http.StatusOK
}

// loopbackHost says whether a Host header names this machine by a
// loopback address or "localhost".
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// remoteAddr is the peer address of the request's connection.
func remoteAddr(req *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// apiHandler serves the call API:
//
//	GET    /api/calls       the calls in progress, oldest first
//	GET    /api/calls/{id}  one call
//	DELETE /api/calls/{id}  hang it up on both legs (204)
func (r *Relay) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/calls", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		calls := r.callList()
		views := make([]CallView, 0, len(calls))
		for _, c := range calls {
			views = append(views, c.view())
		}
		sort.Slice(views, func(i, j int) bool {
			if !views[i].Start.Equal(views[j].Start) {
				return views[i].Start.Before(views[j].Start)
			}
			return views[i].ID < views[j].ID
		})
		writeJSON(w, http.StatusOK, views)
	})
	mux.HandleFunc("/api/calls/{id}", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodDelete {
			methodNotAllowed(w, "GET, DELETE")
			return
		}
		c := r.apiCall(w, req)
		if c == nil {
			return
		}
		if req.Method == http.MethodGet {
			writeJSON(w, http.StatusOK, c.view())
			return
		}
		who := "admin@" + remoteAddr(req).String()
		r.log.Info("call hung up by operator", "call", c.id, "by", who)
		c.adminHangup(who)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{"no such resource"})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch adminAllowed(r.cfg.HTTP.AdminToken, remoteAddr(req), req.Header.Get("Authorization"), req.Host) {
		case http.StatusOK:
			mux.ServeHTTP(w, req)
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", `Bearer realm="mediarelay"`)
			writeJSON(w, http.StatusUnauthorized, apiError{"a valid bearer token is required"})
		default:
			writeJSON(w, http.StatusForbidden, apiError{"the call API answers only on loopback unless http.admin_token is set"})
		}
	})
}

// apiCall finds the call the request's {id} names, or answers 400 or 404.
func (r *Relay) apiCall(w http.ResponseWriter, req *http.Request) *Call {
	id := req.PathValue("id")
	if !validCallID(id) {
		writeJSON(w, http.StatusBadRequest, apiError{"malformed call id"})
		return nil
	}
	r.mu.Lock()
	c := r.calls[id]
	r.mu.Unlock()
	if c == nil {
		writeJSON(w, http.StatusNotFound, apiError{"no such call"})
	}
	return c
}

// validCallID says whether id has the form newCallID gives: 16 lower-case
// hex digits.
func validCallID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if b := id[i]; (b < '0' || b > '9') && (b < 'a' || b > 'f') {
			return false
		}
	}
	return true
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, apiError{"method not allowed"})
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// A write error means the client went away; nothing to tell it.
	_ = json.NewEncoder(w).Encode(v)
}
