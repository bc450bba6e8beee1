// Package echo is the built-in sip:echo endpoint: a SIP UAS of its own on
// loopback that the relay reaches through a real SIP leg, as it would a
// trunk, and that sends every RTP packet back where it came from, so a
// newcomer hears their own voice with no PBX.
package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// echoIdle ends an echo session nobody sends to, in case its BYE was lost.
const echoIdle = 60 * time.Second

// Endpoint is a running echo endpoint.
type Endpoint struct {
	log  *slog.Logger
	ip   string
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	dua  *sipgo.DialogUA
	conn net.PacketConn
	port int

	mu       sync.Mutex
	sessions map[string]*echoSession
	wg       sync.WaitGroup
}

type echoSession struct {
	dss  *sipgo.DialogServerSession
	conn *net.UDPConn
}

// Start listens for SIP on a free UDP port of ip. When relay is set
// (the relay's SIP UDP listener, which its requests leave from), requests
// from anywhere else are dropped unanswered: the echo is the relay's
// internal peer, not a SIP endpoint for the network.
func Start(ctx context.Context, ip string, relay net.Addr, log *slog.Logger) (*Endpoint, error) {
	if ip == "" || ip == "0.0.0.0" || ip == "::" {
		ip = "127.0.0.1"
	}
	e := &Endpoint{log: log.With("component", "echo"), ip: ip, sessions: map[string]*echoSession{}}
	var err error
	if e.conn, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0")); err != nil {
		return nil, fmt.Errorf("echo sip socket: %w", err)
	}
	port := e.conn.LocalAddr().(*net.UDPAddr).Port
	e.port = port
	if e.ua, err = sipgo.NewUA(sipgo.WithUserAgent("mediarelay-echo"), sipgo.WithUserAgentHostname(ip)); err != nil {
		e.conn.Close()
		return nil, err
	}
	if e.srv, err = sipgo.NewServer(e.ua, sipgo.WithServerLogger(e.log)); err != nil {
		e.conn.Close()
		return nil, err
	}
	cli, err := sipgo.NewClient(e.ua, sipgo.WithClientHostname(ip))
	if err != nil {
		e.conn.Close()
		return nil, err
	}
	e.dua = &sipgo.DialogUA{Client: cli, ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "echo", Host: ip, Port: port}}}
	only := func(h sipgo.RequestHandler) sipgo.RequestHandler {
		return func(req *sip.Request, tx sip.ServerTransaction) {
			if !fromRelay(req.Source(), relay) {
				tx.Terminate()
				return
			}
			h(req, tx)
		}
	}
	e.srv.OnInvite(only(e.onInvite))
	e.srv.OnNoRoute(only(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil))
	}))
	e.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if s := e.session(req); s != nil {
			_ = s.dss.ReadAck(req, tx)
		}
	})
	e.srv.OnBye(only(func(req *sip.Request, tx sip.ServerTransaction) {
		s := e.session(req)
		if s == nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
			return
		}
		_ = s.dss.ReadBye(req, tx)
		e.end(s)
	}))
	go func() { _ = e.srv.ServeUDP(e.conn) }()
	return e, nil
}

// Trunk is the trunk entry the relay calls the endpoint through.
func (e *Endpoint) Trunk() config.Trunk {
	return config.Trunk{
		Name:    "echo",
		Address: fmt.Sprintf("sip:echo@%s", net.JoinHostPort(e.ip, fmt.Sprint(e.port))),
		Codecs:  []string{"opus", "PCMU", "PCMA", "G722"},
	}
}

// fromRelay reports whether src is the relay's listener relay (nil: any
// source is). A wildcard listener matches by port on any address.
func fromRelay(src string, relay net.Addr) bool {
	if relay == nil {
		return true
	}
	want, ok := relay.(*net.UDPAddr)
	if !ok {
		return true
	}
	got, err := net.ResolveUDPAddr("udp", src)
	if err != nil {
		return false
	}
	return got.Port == want.Port && (want.IP.IsUnspecified() || got.IP.Equal(want.IP))
}

// Addr is the echo endpoint's SIP address.
func (e *Endpoint) Addr() string { return e.conn.LocalAddr().String() }

func (e *Endpoint) session(req *sip.Request) *echoSession {
	id, err := sip.DialogIDFromRequestUAS(req)
	if err != nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sessions[id]
}

func (e *Endpoint) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	_, offer, err := sdp.Parse(req.Body())
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	var answer []sdp.Codec
	for _, c := range offer.Codecs {
		if !c.Is("telephone-event") {
			answer = append(answer, c) // the first codec offered: echo doesn't care which
			break
		}
	}
	if len(answer) == 0 {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
		return
	}
	for _, c := range offer.Codecs {
		if c.Is("telephone-event") {
			answer = append(answer, c)
		}
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(e.ip)})
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil))
		return
	}
	dss, err := e.dua.ReadInvite(req, tx)
	if err != nil {
		conn.Close()
		_ = tx.Respond(sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	s := &echoSession{dss: dss, conn: conn}
	e.mu.Lock()
	e.sessions[dss.ID] = s
	e.mu.Unlock()
	e.wg.Add(1)
	go e.echo(s)
	local := conn.LocalAddr().(*net.UDPAddr)
	body := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()), Version: 1,
		Addr:   netip.MustParseAddr(e.ip),
		Port:   local.Port,
		Codecs: answer,
		Ptime:  offer.Ptime,
	}.Marshal()
	if err := dss.RespondSDP(body); err != nil {
		e.log.Debug("echo answer not acknowledged", "err", err)
		e.end(s)
	}
}

// echo sends each packet back to its sender until the socket closes.
func (e *Endpoint) echo(s *echoSession) {
	defer e.wg.Done()
	buf := make([]byte, 1500)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(echoIdle))
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				e.end(s)
			}
			return
		}
		_, _ = s.conn.WriteToUDPAddrPort(buf[:n], from)
	}
}

func (e *Endpoint) end(s *echoSession) {
	e.mu.Lock()
	delete(e.sessions, s.dss.ID)
	e.mu.Unlock()
	_ = s.conn.Close()
}

// Close stops the endpoint and its sessions.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	ss := make([]*echoSession, 0, len(e.sessions))
	for _, s := range e.sessions {
		ss = append(ss, s)
	}
	e.mu.Unlock()
	for _, s := range ss {
		e.end(s)
	}
	err := e.conn.Close()
	e.wg.Wait()
	_ = e.ua.Close()
	return err
}
