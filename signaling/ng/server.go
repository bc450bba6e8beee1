package ng

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mediarelay/mediarelay/pkg/bencode"
)

// Handler runs the commands that concern calls. Its errors become the
// reply's error-reason, so they say what was wrong without internal detail.
type Handler interface {
	// Offer and Answer return the rewritten SDP.
	Offer(req *Request) (string, error)
	Answer(req *Request) (string, error)
	// Delete ends the call (or one party of it, with from-tag) and returns
	// its final statistics; Query returns them without ending it.
	Delete(req *Request) (map[string]any, error)
	Query(req *Request) (map[string]any, error)
	// List returns up to limit call-ids.
	List(limit int) []string
	// Statistics returns the node's totals.
	Statistics() map[string]any
}

// Options configure a Server.
type Options struct {
	// Allow lists the proxies whose commands are served; datagrams from
	// elsewhere are dropped unanswered. Empty means loopback only.
	Allow []netip.Prefix
	// PerSourceRate is how many requests one source may send per second
	// (a burst of as many); more are dropped. 0 means 1000.
	PerSourceRate int
	// Workers bounds the commands run at once. 0 means 64.
	Workers int
	// CacheTTL is how long a reply is kept for a retransmitted cookie.
	// 0 means 30 s.
	CacheTTL time.Duration
	Logger   *slog.Logger
	// OnCommand, if set, is told each command's name and result ("ok",
	// "pong" or "error"), for metrics. Unknown command names are "other".
	OnCommand func(command, result string)
}

// MaxRequest is the largest datagram served; larger ones are answered
// with an error (the proxy sees why) when the cookie is readable.
const MaxRequest = 48 * 1024

// maxCookie bounds the cookie; rtpengine's proxies send a few dozen bytes.
const maxCookie = 128

// maxCached and maxCacheBytes bound the reply cache; the oldest entries go first.
const (
	maxCached     = 16384
	maxCacheBytes = 16 << 20
)

// Server is an ng control socket.
type Server struct {
	conn    *net.UDPConn
	h       Handler
	allow   []netip.Prefix
	log     *slog.Logger
	rate    int
	ttl     time.Duration
	workers chan struct{}
	onCmd   func(command, result string)

	mu    sync.Mutex
	cache map[cacheKey]*cached
	order []cacheKey // insertion order, for eviction
	// cacheBytes is the size of the cached replies.
	cacheBytes int
	sources    map[netip.Addr]*window
	closed     bool
	wg         sync.WaitGroup
	dropped    atomic.Uint64
}

type cacheKey struct {
	src    netip.AddrPort
	cookie string
}

type cached struct {
	reply   []byte // nil while the command runs
	expires time.Time
}

type window struct {
	start time.Time
	n     int
}

// Listen opens the control socket on addr (host:port) for h.
func Listen(addr string, h Handler, o Options) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("ng listen %s: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("ng listen %s: %w", addr, err)
	}
	s := &Server{
		conn:    conn,
		h:       h,
		allow:   o.Allow,
		log:     o.Logger,
		rate:    o.PerSourceRate,
		ttl:     o.CacheTTL,
		cache:   map[cacheKey]*cached{},
		sources: map[netip.Addr]*window{},
		onCmd:   o.OnCommand,
	}
	if len(s.allow) == 0 {
		s.allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.rate <= 0 {
		s.rate = 1000
	}
	if s.ttl <= 0 {
		s.ttl = 30 * time.Second
	}
	n := o.Workers
	if n <= 0 {
		n = 64
	}
	s.workers = make(chan struct{}, n)
	return s, nil
}

// Addr is the socket's local address.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Dropped counts datagrams dropped unanswered: from sources not allowed,
// over a source's rate, or without a cookie.
func (s *Server) Dropped() uint64 { return s.dropped.Load() }

// Close stops Serve and waits for running commands.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

// Serve reads commands until Close.
func (s *Server) Serve() error {
	buf := make([]byte, MaxRequest+1)
	for {
		n, src, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("ng read: %w", err)
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if !s.allowed(src.Addr()) {
			s.dropped.Add(1)
			s.log.Debug("ng datagram from a source not allowed; dropped", "source", src.String())
			continue
		}
		if !s.admit(src.Addr(), time.Now()) {
			s.dropped.Add(1)
			s.log.Debug("ng source over its rate; dropped", "source", src.String())
			continue
		}
		s.packet(append([]byte(nil), buf[:n]...), src)
	}
}

func (s *Server) allowed(a netip.Addr) bool {
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admit counts a request against its source's one-second window.
func (s *Server) admit(a netip.Addr, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.sources[a]
	if w == nil {
		if len(s.sources) >= 1024 { // only allowed sources get here; keep it bounded anyway
			for k, v := range s.sources {
				if now.Sub(v.start) > time.Second {
					delete(s.sources, k)
				}
			}
		}
		w = &window{start: now}
		s.sources[a] = w
	}
	if now.Sub(w.start) > time.Second {
		w.start, w.n = now, 0
	}
	w.n++
	return w.n <= s.rate
}

// packet handles one datagram: a cached reply for a known cookie, else the
// command on a worker.
func (s *Server) packet(b []byte, src netip.AddrPort) {
	cookie, body, ok := bytes.Cut(b, []byte(" "))
	if !ok || len(cookie) == 0 || len(cookie) > maxCookie {
		s.log.Debug("ng datagram without a cookie; dropped", "source", src.String(), "len", len(b))
		s.dropped.Add(1)
		return
	}
	key := cacheKey{src: src, cookie: string(cookie)}
	now := time.Now()
	s.mu.Lock()
	if c, ok := s.cache[key]; ok && now.Before(c.expires) {
		reply := c.reply
		s.mu.Unlock()
		if reply != nil {
			_, _ = s.conn.WriteToUDPAddrPort(reply, src)
		} // else: still running; its reply answers the retransmission too
		return
	}
	s.remember(key, &cached{expires: now.Add(s.ttl)}, now)
	s.mu.Unlock()

	select {
	case s.workers <- struct{}{}:
	default:
		s.finish(key, src, errorReply(cookie, "server busy"))
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.workers }()
		s.finish(key, src, s.reply(cookie, body, src))
	}()
}

// remember caches c under key and evicts what is over the cache's bounds.
// s.mu is held.
func (s *Server) remember(key cacheKey, c *cached, now time.Time) {
	if old, ok := s.cache[key]; ok {
		s.cacheBytes -= len(old.reply)
	} else {
		s.order = append(s.order, key)
	}
	s.cache[key] = c
	s.evict(now)
}

// evict drops expired entries, then the oldest while the cache holds more
// than maxCached entries or maxCacheBytes of replies. s.mu is held.
func (s *Server) evict(now time.Time) {
	for len(s.order) > 0 {
		old, ok := s.cache[s.order[0]]
		if ok && len(s.cache) <= maxCached && s.cacheBytes <= maxCacheBytes && now.Before(old.expires) {
			break
		}
		if ok {
			s.cacheBytes -= len(old.reply)
			delete(s.cache, s.order[0])
		}
		s.order = s.order[1:]
	}
}

func (s *Server) finish(key cacheKey, src netip.AddrPort, reply []byte) {
	s.mu.Lock()
	if c, ok := s.cache[key]; ok {
		c.reply = reply
		s.cacheBytes += len(reply)
		s.evict(time.Now())
	}
	s.mu.Unlock()
	if _, err := s.conn.WriteToUDPAddrPort(reply, src); err != nil {
		s.log.Debug("ng reply not sent", "source", src.String(), "err", err)
	}
}

// reply runs one command and encodes its answer.
func (s *Server) reply(cookie, body []byte, src netip.AddrPort) []byte {
	if len(body) > MaxRequest-len(cookie)-1 {
		return errorReply(cookie, "request too large")
	}
	d, err := bencode.DecodeDict(body)
	if err != nil {
		s.log.Debug("ng request malformed", "source", src.String(), "err", err)
		return errorReply(cookie, "malformed bencode")
	}
	req, err := parseRequest(d, src)
	if err != nil {
		s.count("other", "error")
		return errorReply(cookie, err.Error())
	}
	res, err := s.run(req)
	if err != nil {
		s.count(req.Command, "error")
		s.log.Debug("ng command failed", "command", truncate(req.Command), "call_id", truncate(req.CallID), "source", src.String(), "err", err)
		return errorReply(cookie, err.Error())
	}
	if _, ok := res["result"]; !ok {
		res["result"] = "ok"
	}
	s.count(req.Command, fmt.Sprint(res["result"]))
	out, err := bencode.Append(append(append([]byte(nil), cookie...), ' '), res)
	if err != nil {
		s.log.Error("ng reply not encodable", "command", req.Command, "err", err)
		return errorReply(cookie, "internal error")
	}
	return out
}

// run dispatches a parsed request; a panic in a handler is an error reply,
// never a dead control socket.
func (s *Server) run(req *Request) (res map[string]any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("ng command panicked", "command", req.Command, "call_id", req.CallID, "panic", fmt.Sprint(p))
			res, err = nil, errors.New("internal error")
		}
	}()
	needCall := func() error {
		if req.CallID == "" {
			return errors.New("no call-id")
		}
		return nil
	}
	switch req.Command {
	case "ping":
		return map[string]any{"result": "pong"}, nil
	case "offer", "answer":
		if err := needCall(); err != nil {
			return nil, err
		}
		if req.SDP == "" {
			return nil, errors.New("no sdp")
		}
		if req.FromTag == "" {
			return nil, errors.New("no from-tag")
		}
		f := s.h.Offer
		if req.Command == "answer" {
			if req.ToTag == "" {
				return nil, errors.New("no to-tag")
			}
			f = s.h.Answer
		}
		sdp, err := f(req)
		if err != nil {
			return nil, err
		}
		return map[string]any{"sdp": sdp}, nil
	case "delete":
		if err := needCall(); err != nil {
			return nil, err
		}
		return s.h.Delete(req)
	case "query":
		if err := needCall(); err != nil {
			return nil, err
		}
		return s.h.Query(req)
	case "list":
		limit := 32
		if v, ok := req.Dict["limit"].(int64); ok && v > 0 && v < 1<<20 {
			limit = int(v)
		}
		ids := s.h.List(limit)
		list := make([]any, len(ids))
		for i, id := range ids {
			list[i] = id
		}
		return map[string]any{"calls": list}, nil
	case "statistics":
		return map[string]any{"statistics": s.h.Statistics()}, nil
	}
	return nil, fmt.Errorf("unknown command %q", truncate(req.Command))
}

// commands are the names OnCommand is told; others are "other".
var commands = map[string]bool{"ping": true, "offer": true, "answer": true, "delete": true, "query": true, "list": true, "statistics": true}

func (s *Server) count(command, result string) {
	if s.onCmd == nil {
		return
	}
	if !commands[command] {
		command = "other"
	}
	s.onCmd(command, result)
}

func errorReply(cookie []byte, reason string) []byte {
	out, _ := bencode.Append(append(append([]byte(nil), cookie...), ' '),
		map[string]any{"result": "error", "error-reason": reason})
	return out
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32]
	}
	return s
}
