// Package callapi serves the HTTP call API that operators use:
//
//	GET    /api/calls       the calls in progress, oldest first
//	GET    /api/calls/{id}  one call
//	DELETE /api/calls/{id}  hang it up on both legs (204)
//
// It owns who may use the API (a bearer token, or loopback clients only),
// the JSON views of a call and its media legs, and the answers to bad
// requests. The calls themselves are signaling's, reached through Calls.
package callapi

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

// Calls is what the API reads and ends: the relay's calls in progress.
type Calls interface {
	// Views lists the calls in progress, in any order.
	Views() []CallView
	// View is the call id names; ok is false if there is none.
	View(id string) (v CallView, ok bool)
	// Hangup ends the call id names on both legs on an operator's behalf
	// (who, for the CDR's ended_by); false if there is no such call.
	Hangup(id, who string) bool
}

// Handler serves the call API over calls. token is http.admin_token: with
// it the API takes requests from anywhere that carry it, without it only
// from loopback.
func Handler(token string, calls Calls) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/calls", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		views := calls.Views()
		if views == nil {
			views = []CallView{}
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
		id := req.PathValue("id")
		if !ValidID(id) {
			writeJSON(w, http.StatusBadRequest, apiError{"malformed call id"})
			return
		}
		if req.Method == http.MethodGet {
			if v, ok := calls.View(id); ok {
				writeJSON(w, http.StatusOK, v)
				return
			}
		} else if calls.Hangup(id, "admin@"+remoteAddr(req).String()) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusNotFound, apiError{"no such call"})
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{"no such resource"})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch allowed(token, remoteAddr(req), req.Header.Get("Authorization"), req.Host) {
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

// allowed decides whether a call API request may proceed. With a token
// configured the request must carry it as a bearer token (compared in
// constant time); without one only loopback clients are served. remote is
// the connection's peer address, never a header's claim. Without a token
// the request's Host must name loopback too: a page whose own host name
// was re-pointed at 127.0.0.1 (DNS rebinding) is not let in.
func allowed(token string, remote netip.Addr, authorization, host string) int {
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

// ValidID says whether id has the form of a call id: 16 lower-case hex
// digits.
func ValidID(id string) bool {
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
