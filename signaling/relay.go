package signaling

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/connlimit"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/signaling/callapi"
	"github.com/mediarelay/mediarelay/signaling/callauth"
	"github.com/mediarelay/mediarelay/signaling/callmetrics"
	"github.com/mediarelay/mediarelay/signaling/callreg"
	"github.com/mediarelay/mediarelay/signaling/connguard"
	"github.com/mediarelay/mediarelay/signaling/drain"
	"github.com/mediarelay/mediarelay/signaling/echo"
	"github.com/mediarelay/mediarelay/signaling/fork"
	"github.com/mediarelay/mediarelay/signaling/join"
	"github.com/mediarelay/mediarelay/signaling/logsafe"
	"github.com/mediarelay/mediarelay/signaling/ngnode"
	"github.com/mediarelay/mediarelay/signaling/registrar"
	"github.com/mediarelay/mediarelay/signaling/throttle"
	"github.com/mediarelay/mediarelay/signaling/tlsconf"
	"github.com/mediarelay/mediarelay/signaling/trunkreg"
	"github.com/mediarelay/mediarelay/signaling/web"
	"github.com/mediarelay/mediarelay/signaling/wsdemux"
)

// Relay is a running mediarelay: listeners, the B2BUA and its calls.
type Relay struct {
	cfg   config.Config
	log   *slog.Logger
	host  string // address in our Via/Contact towards trunks
	start time.Time

	ua        *sipgo.UserAgent
	server    *sipgo.Server
	client    *sipgo.Client
	browserUA *sipgo.DialogUA
	ringer    *fork.Ringer // rings a user's browsers over browserUA
	trunkUA   trunkUAs     // by the trunk's transport
	tls       *tlsconf.State

	ports  *media.PortAllocator
	webrtc *media.WebRTC
	cdr    *cdr.Store
	m      *callmetrics.Counters
	// connRefused counts connections refused or closed by the relay's
	// hygiene (foreign Origin, limits, idleness), by listener and reason.
	connRefused *prometheus.CounterVec
	// Connection hygiene: SIP TCP/TLS streams and browsers'
	// WebSockets, checked by reapers until reapDone closes (which also
	// stops the call watcher, watchCalls).
	sipReaper, wsReaper *connguard.Reaper
	reapDone            chan struct{}

	routes    *config.Routes       // trunks and the default trunk, compiled by config
	echoTrunk *config.Trunk        // the built-in sip:echo endpoint, reached like a trunk; nil when off
	registrar *registrar.Registrar // browsers' registrations
	limits    *throttle.Users      // per-user call limits
	auth      *callauth.Gate       // who may call whom
	srcLimits *throttle.Sources    // per-source request rates
	inb       *inboundState

	// calls are the calls in progress, by id, dialog and WebSocket peer;
	// their lock also guards the fields of a Call a transfer changes.
	calls  *callreg.Registry[*Call]
	joins  *join.Joins  // trunk-to-trunk calls after a transfer
	ngNode *ngnode.Node // the calls SIP proxies set up over ng
	wg     sync.WaitGroup

	// drain: once on, new calls are refused (INVITEs and ng offers get
	// 503, /healthz too); calls in progress go on.
	drain *drain.State

	httpAddr, udpAddr, tcpAddr, tlsAddr net.Addr

	httpSrv *http.Server
	demux   *wsdemux.Demux
	closers []func() error
	ready   chan struct{}
}

// New builds a relay from a validated configuration; Serve starts it.
func New(cfg config.Config, log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.Default()
	}
	log = logsafe.Redact(log) // no SRTP key in any log line
	r := &Relay{
		cfg:   cfg,
		log:   log,
		start: time.Now(),
		calls: callreg.New[*Call](),
		ready: make(chan struct{}),

		sipReaper: connguard.NewReaper(),
		wsReaper:  connguard.NewReaper(),
		reapDone:  make(chan struct{}),
	}
	r.joins = join.New(joinHost{r}, log, cfg.Media.Timeout)
	r.ngNode = ngnode.New(ngHost{r}, r.start, ringTimeout)
	r.drain = drain.New(log, r.ActiveCalls)
	r.host = cfg.SIP.Host
	if pub := cfg.Media.PublicAddrs(); r.host == "" && len(pub) > 0 {
		r.host = pub[0].String()
	}
	if r.host == "" && cfg.Media.BindIP != "" && cfg.Media.BindIP != "0.0.0.0" && cfg.Media.BindIP != "::" {
		r.host = cfg.Media.BindIP
	}
	if r.host == "" {
		r.host = "127.0.0.1"
	}
	var err error
	if r.routes, err = cfg.Routes(); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(r.routes.Trunks)+1)
	for _, t := range r.routes.Trunks {
		names = append(names, t.Name)
	}
	if r.routes.Default != nil {
		names = append(names, r.routes.Default.Name)
	}
	r.m = callmetrics.New(metrics.Options{Trunks: names, Refresh: r.countLive, Active: r.activeCalls})
	r.connRefused = r.m.NewCounterVec("mediarelay_connections_refused_total",
		"Connections refused or closed by the relay, by listener (http, ws, tcp, tls) and reason (origin, per_source, total, idle, ping_timeout).", "listener", "reason")
	if err := r.initInbound(cfg); err != nil {
		return nil, err
	}
	r.limits = throttle.NewUsers(cfg.SIP.UserMaxCalls, cfg.SIP.UserCallRate)
	r.auth = callauth.New(callauth.Options{
		Registrar: r.registrar, Users: r.inb.creds, Limits: r.limits,
		Anonymous: cfg.SIP.AnonymousCalls, TokenSecret: cfg.SIP.TokenSecret,
		IsEcho:  func(t *config.Trunk) bool { return r.echoTrunk != nil && t == r.echoTrunk },
		Refused: r.m.CountSetupFailure, Log: r.log,
	})
	r.srcLimits = throttle.NewSources(cfg.SIP, r.m.Relay)

	if r.ports, err = media.NewPortAllocator(cfg.Media.BindIP, cfg.Media.PortMin, cfg.Media.PortMax); err != nil {
		return nil, fmt.Errorf("media ports: %w", err)
	}
	return r, nil
}

// route picks the trunk for a browser call to user: the echo endpoint
// for sip:echo, else what the routing table says.
func (r *Relay) route(user string) *config.Trunk {
	if user == "echo" && r.echoTrunk != nil {
		return r.echoTrunk
	}
	return r.routes.Route(user)
}

// Serve opens every listener and serves until ctx ends; then it hangs up
// all calls and releases everything.
func (r *Relay) Serve(ctx context.Context) error {
	defer r.shutdown()
	if err := r.open(ctx); err != nil {
		return err
	}
	close(r.ready)
	if ip, err := netip.ParseAddr(r.cfg.Media.BindIP); err == nil && ip.IsUnspecified() && r.cfg.Media.PublicIP == "" {
		// Peers must be told an address they can reach; with a wildcard
		// bind and no public_ip the relay can only guess.
		r.log.Warn("media.bind_ip is a wildcard and media.public_ip is not set: SDP and ICE candidates will advertise "+
			r.mediaAddr().String()+"; set media.public_ip to the address peers reach", "bind_ip", r.cfg.Media.BindIP)
	}
	if r.cfg.SIP.AnonymousCalls {
		r.log.Warn("sip.anonymous_calls is on: any WebSocket client can call trunks without credentials (toll fraud); turn it off on a public address")
	}
	r.log.Info("mediarelay ready", "http", r.cfg.HTTP.Listen, "sip_udp", r.cfg.SIP.UDPListen,
		"sip_tcp", r.cfg.SIP.TCPListen, "webrtc", r.webrtc.LocalAddr().String(),
		"rtp_ports", fmt.Sprintf("%d-%d", r.cfg.Media.PortMin, r.cfg.Media.PortMax))
	<-ctx.Done()
	return nil
}

// Ready is closed when every listener is open.
func (r *Relay) Ready() <-chan struct{} { return r.ready }

func (r *Relay) open(ctx context.Context) error {
	var err error
	r.webrtc, err = media.NewWebRTC(media.WebRTCOptions{
		BindIP: r.cfg.Media.BindIP, Port: r.cfg.Media.WebRTCPort, PublicIPs: r.cfg.Media.PublicAddrs(), Logger: r.log,
		TCPPort: r.cfg.Media.ICETCPPort, // config's -1 is media.TCPSameAsUDP
	})
	if err != nil {
		return err
	}
	r.closers = append(r.closers, r.webrtc.Close)

	if err := r.openCDR(); err != nil {
		return err
	}

	if r.tls, err = tlsconf.New(r.cfg, r.log); err != nil {
		return err
	}
	logsafe.BoundSIPDefaultLogger()
	sipLog := logsafe.Untrusted(r.log).With("component", "sip")
	r.ua, err = sipgo.NewUA(sipgo.WithUserAgent("mediarelay"), sipgo.WithUserAgentHostname(r.host),
		sipgo.WithUserAgenTLSConfig(r.tls.ClientConfig()),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sipLog)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)))
	if err != nil {
		return fmt.Errorf("sip user agent: %w", err)
	}
	r.closers = append(r.closers, r.ua.Close)
	if r.server, err = sipgo.NewServer(r.ua, sipgo.WithServerLogger(r.log.With("component", "sip"))); err != nil {
		return fmt.Errorf("sip server: %w", err)
	}
	if r.client, err = sipgo.NewClient(r.ua, sipgo.WithClientHostname(r.host),
		sipgo.WithClientLogger(r.log.With("component", "sip"))); err != nil {
		return fmt.Errorf("sip client: %w", err)
	}
	// Listen first, serve last: the dialog UAs need the bound ports for
	// their Contact, and no request may arrive before the handlers exist.
	var serveUDP, serveTCP func() error
	if a := r.cfg.SIP.UDPListen; a != "" {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("sip.udp_listen %s: %w", a, err)
		}
		r.closers = append(r.closers, pc.Close)
		r.udpAddr = pc.LocalAddr()
		serveUDP = func() error { return r.server.ServeUDP(pc) }
	}
	if a := r.cfg.SIP.TCPListen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("sip.tcp_listen %s: %w", a, err)
		}
		r.closers = append(r.closers, l.Close)
		r.tcpAddr = l.Addr()
		sl := r.sipStream(r.guard(l, "tcp", r.cfg.SIP.MaxConns, r.cfg.SIP.MaxConnsPerSource))
		serveTCP = func() error { return r.server.ServeTCP(sl) }
	}
	var serveTLS func() error
	if a := r.cfg.SIP.TLSListen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("sip.tls_listen %s: %w", a, err)
		}
		r.closers = append(r.closers, l.Close)
		r.tlsAddr = l.Addr()
		tl := r.sipStream(tls.NewListener(r.guard(l, "tls", r.cfg.SIP.MaxConns, r.cfg.SIP.MaxConnsPerSource), r.tls.ServerConfig()))
		serveTLS = func() error { return r.server.ServeTLS(tl) }
	}
	if err := r.listenHTTP(); err != nil {
		return err
	}

	httpHost, httpPort := splitHostPort(r.httpAddr.String())
	if ip, err := netip.ParseAddr(httpHost); err != nil || ip.IsUnspecified() {
		httpHost = r.host
	}
	r.bindClient(r.client) // after the listeners exist: requests leave from them
	r.browserUA = &sipgo.DialogUA{
		Client:         r.client,
		ContactHDR:     sip.ContactHeader{Address: sip.Uri{User: "mediarelay", Host: httpHost, Port: httpPort, UriParams: sip.HeaderParams{{K: "transport", V: "ws"}}}},
		RewriteContact: true, // browsers' Contact is a .invalid host; reach them on their WebSocket
	}
	r.ringer = fork.NewRinger(r.host, r.browserUA, r.client, r.log)
	sipAddr := r.udpAddr
	if sipAddr == nil {
		sipAddr = r.tcpAddr
	}
	sipPort := 0
	if sipAddr != nil {
		_, sipPort = splitHostPort(sipAddr.String())
	}
	r.trunkUA = newTrunkUAs(r.client, r.host, sipPort, r.tlsAddr)
	r.routeRequests()
	if r.cfg.SIP.Echo {
		ep, err := echo.Start(ctx, r.cfg.Media.BindIP, r.udpAddr, r.log)
		if err != nil {
			return fmt.Errorf("echo endpoint: %w", err)
		}
		r.closers = append(r.closers, ep.Close)
		if r.echoTrunk, err = config.CompileTrunk(ep.Trunk()); err != nil {
			return fmt.Errorf("echo endpoint: %w", err)
		}
	}

	if serveUDP != nil {
		go r.serveLog("udp", serveUDP)
		if err := r.awaitUDPServing(); err != nil {
			return err
		}
	}
	if serveTCP != nil {
		go r.serveLog("tcp", serveTCP)
	}
	if serveTLS != nil {
		go r.serveLog("tls", serveTLS)
	}
	go r.sipReaper.Run(connguard.ReaperTick(r.cfg.SIP.TCPMessageTimeout, r.cfg.SIP.TCPIdleTimeout), r.reapDone,
		func(reason string) { r.connRefused.WithLabelValues("sip_stream", reason).Inc() })
	go r.wsReaper.Run(connguard.ReaperTick(r.cfg.HTTP.WSIdleTimeout, r.cfg.HTTP.WSPingInterval), r.reapDone,
		func(reason string) { r.connRefused.WithLabelValues("ws", reason).Inc() })
	go r.watchCalls(r.reapDone)
	r.closers = append(r.closers, func() error { close(r.reapDone); return nil })
	go r.demux.Serve()
	go r.serveLog("http", func() error { return r.httpSrv.Serve(r.demux.HTTP()) })
	go r.serveLog("ws", func() error { return r.server.ServeWS(r.demux.SIP()) })
	r.startTrunkRegistrations(ctx)
	if r.cfg.NG.Listen == "" {
		return nil
	}
	cmds := r.m.NewCounterVec("mediarelay_ng_commands_total",
		"ng control commands served, by command and result (ok, pong, error).", "command", "result")
	return r.ngNode.Listen(ngnode.ListenOptions{Addr: r.cfg.NG.Listen, Allow: r.cfg.NG.Allow, Log: r.log,
		OnCommand: func(command, result string) { cmds.WithLabelValues(command, result).Inc() }})
}

// startTrunkRegistrations keeps the relay registered to every trunk with
// register set (signaling/trunkreg), until ctx ends; then it unregisters.
func (r *Relay) startTrunkRegistrations(ctx context.Context) {
	gauge := r.m.NewGaugeVec("mediarelay_trunk_registered", "1 while the relay's registration to the trunk is in force.", "trunk")
	for _, t := range r.routes.Trunks {
		if !t.Register {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			callID := newCallID() + newCallID() + "@" + r.host
			trunkreg.Keep(ctx, r.client, r.trunkUA.forTrunk(t).ContactHDR, t, callID, r.log, func(up bool) {
				if up {
					gauge.WithLabelValues(t.Name).Set(1)
				} else {
					gauge.WithLabelValues(t.Name).Set(0)
				}
			})
		}()
	}
}

// openCDR opens the CDR store the configuration names, if any, and
// exports its counts.
func (r *Relay) openCDR() error {
	var err error
	opts := cdr.Options{Log: r.log, SpoolPath: r.cfg.CDR.Spool}
	switch {
	case r.cfg.CDR.Driver == "postgres":
		// The DSN's password stays out of errors and logs (cdr.RedactDSN).
		if r.cdr, err = cdr.OpenPostgres(r.cfg.CDR.DSN, opts); err != nil {
			return err
		}
	case r.cfg.CDR.Path != "":
		if r.cdr, err = cdr.OpenSQLite(r.cfg.CDR.Path, opts); err != nil {
			return fmt.Errorf("cdr %s: %w", r.cfg.CDR.Path, err)
		}
	default:
		return nil
	}
	r.closers = append(r.closers, r.cdr.Close)
	r.m.CDR(func() metrics.CDRStats {
		st := r.cdr.Stats()
		return metrics.CDRStats{Written: st.Written, Dropped: st.Dropped, Failed: st.Failed, Retries: st.Retries,
			Queued: r.cdr.QueueLength(), Spooled: int(st.Spooled)}
	})
	return nil
}

func (r *Relay) listenHTTP() error {
	l, err := net.Listen("tcp", r.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", r.cfg.HTTP.Listen, err)
	}
	r.httpAddr = l.Addr()
	r.closers = append(r.closers, l.Close)
	l = r.guard(l, "http", r.cfg.HTTP.MaxConns, r.cfg.HTTP.MaxConnsPerSource)
	if r.cfg.HTTP.TLSCert != "" {
		// The certificate was loaded by tlsconf.New and reloads with it.
		l = tls.NewListener(l, r.tls.HTTPConfig())
	}
	r.demux = wsdemux.New(l)
	r.demux.OnWSClose = r.registrar.ConnClosed
	r.demux.AllowedOrigins = r.cfg.HTTP.AllowedOrigins
	r.demux.Log = r.log
	r.demux.OnRefused = func(reason string) { r.connRefused.WithLabelValues("http", reason).Inc() }
	r.demux.WrapWS = func(c net.Conn) net.Conn {
		return connguard.NewWSConn(c, r.cfg.HTTP.WSIdleTimeout, r.cfg.HTTP.WSPingInterval, r.wsBusy, r.wsReaper)
	}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler())
	mux.HandleFunc("/healthz", r.drain.Healthz) // 503 while draining
	mux.HandleFunc("/admin/drain", r.drain.Admin)
	mux.Handle("/metrics", r.m.Handler())
	mux.Handle("/api/", callapi.Handler(r.cfg.HTTP.AdminToken, apiCalls{r}))
	r.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	return nil
}

// guard caps a listener's connections and keeps it accepting through errors.
func (r *Relay) guard(l net.Listener, name string, max, perSource int) net.Listener {
	return connlimit.New(l, name, max, perSource, r.log, func(reason string) { r.connRefused.WithLabelValues(name, reason).Inc() })
}

// sipStream holds a SIP TCP/TLS listener's connections to completing messages.
func (r *Relay) sipStream(l net.Listener) net.Listener {
	return connguard.NewSIPStreamListener(l, r.sipReaper, r.cfg.SIP.TCPMessageTimeout, r.cfg.SIP.TCPIdleTimeout, r.log)
}

// wsBusy reports whether the WebSocket from remote carries a registration or a call.
func (r *Relay) wsBusy(remote string) bool {
	return r.calls.Busy(remote) || r.registrar.UserOn(remote) != ""
}

func (r *Relay) serveLog(name string, f func() error) {
	if err := f(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		r.log.Error("listener stopped", "listener", name, "err", err)
	}
}

// shutdown hangs up every call, then closes listeners and stores.
func (r *Relay) shutdown() {
	r.ngNode.Close() // first: no offer may create a call while the others hang up
	for _, c := range r.calls.List() {
		c.hangup(cdr.CauseShutdown, 0, "")
	}
	for _, j := range r.joins.List() {
		j.Hangup(cdr.CauseShutdown)
	}
	r.wg.Wait()
	if r.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = r.httpSrv.Shutdown(ctx)
		cancel()
	}
	for i := len(r.closers) - 1; i >= 0; i-- {
		_ = r.closers[i]()
	}
}

// HTTPAddr is the address of the HTTP and WebSocket listener (after Ready).
func (r *Relay) HTTPAddr() net.Addr { return r.httpAddr }

// SIPUDPAddr is the address of the SIP UDP listener (after Ready), or nil.
func (r *Relay) SIPUDPAddr() net.Addr { return r.udpAddr }

// SIPTCPAddr is the address of the SIP TCP listener (after Ready), or nil.
func (r *Relay) SIPTCPAddr() net.Addr { return r.tcpAddr }

// SIPTLSAddr is the address of the SIP TLS listener (after Ready), or nil.
func (r *Relay) SIPTLSAddr() net.Addr { return r.tlsAddr }

// ActiveCalls is the number of calls in progress.
func (r *Relay) ActiveCalls() int {
	joins := r.joins.Len()
	return r.calls.Len() + joins
}

// PortsInUse is the number of RTP port pairs allocated.
func (r *Relay) PortsInUse() int { return r.ports.InUse() }

// ReloadTLS re-reads the SIP and HTTP certificates, keys and the client CA
// bundle. New connections use them; a failure keeps the previous ones and
// is returned (and logged). The command calls it on SIGHUP.
func (r *Relay) ReloadTLS() error {
	if r.tls == nil {
		return errors.New("relay not started")
	}
	return r.tls.Reload()
}

// Drain makes the relay refuse new calls set up over ng (the proxy gets an
// error and picks another node) and answer /healthz with 503 so that load
// balancers notice, while the calls in progress go on to their end.
// It cannot be undone short of a restart.
func (r *Relay) Drain() { r.drain.Drain() }

// Draining reports whether Drain was called.
func (r *Relay) Draining() bool { return r.drain.Draining() }

// CDR is the relay's record store (nil when disabled).
func (r *Relay) CDR() *cdr.Store { return r.cdr }

func splitHostPort(a string) (string, int) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return a, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// awaitUDPServing waits until sipgo has taken the UDP listener into its
// connection pool. Requests to trunks are sent from that socket
// (bindClient); one sent before the serving goroutine ran would make sipgo
// try to bind the listener's address a second time and fail, so a call
// placed right after start would be answered 503.
func (r *Relay) awaitUDPServing() error {
	tl := r.ua.TransportLayer()
	addr := r.udpAddr.String()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := tl.GetConnection("udp", addr); c != nil {
			c.Ref(-1) // GetConnection took a reference
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sip.udp_listen %s: not serving after 5s", addr)
		}
		time.Sleep(time.Millisecond)
	}
}
