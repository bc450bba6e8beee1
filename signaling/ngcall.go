package signaling

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/logsafe"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
	"github.com/mediarelay/mediarelay/signaling/ng"
)

// DirectionNG is the CDR direction of a call set up over the ng protocol;
// its trunk column is "ng:" and the proxy's address.
const DirectionNG = "ng"

// Errors of ng commands, as the proxy reads them in error-reason.
var (
	errNGUnknownCall = errors.New("Unknown call-id")
	// errNGDraining and errNGNoPorts are rtpengine's own words: Kamailio's
	// rtpengine module then tries the next node of the set instead of
	// failing the call ("Parallel session limit reached"; newer versions
	// also on "Ran out of ports").
	errNGDraining  = errors.New("Parallel session limit reached")
	errNGNoPorts   = errors.New("Ran out of ports")
	errNGSameProto = errors.New("no protocol conversion asked (transport-protocol, ICE): only WebRTC <-> RTP calls are relayed over ng")
	errNGReoffer   = errors.New("re-offer with a changed SDP is not supported")
	errNGFromTag   = errors.New("from-tag does not match the offer's")
)

// ngSession is a call set up by ng commands: the relay's Call (legs,
// forwarding, statistics, CDR) and what the proxy told about it.
type ngSession struct {
	mu      sync.Mutex
	c       *Call
	callID  string
	fromTag string
	toTag   string
	proxy   netip.AddrPort
	created time.Time
	last    time.Time // last signal
	labels  map[string]string
	// webOffer: the offerer (from-tag) is the WebRTC side; else the
	// offerer speaks plain RTP/SRTP and the answerer is WebRTC.
	webOffer  bool
	offerSDP  string // as received, to recognise a retransmitted offer
	replySDP  string // our offer, returned again for a retransmitted offer
	answerSDP string
	keys      *mediaplan.InboundKeys // SDES keys taken from a plain SRTP offer
	flags     ng.Flags               // of the offer
}

// ngHandler is the relay's ng.Handler.
type ngHandler struct{ r *Relay }

// NGAddr is the address of the ng control socket (after Ready), or nil.
func (r *Relay) NGAddr() netip.AddrPort {
	if r.ngSrv == nil {
		return netip.AddrPort{}
	}
	a, _ := netip.ParseAddrPort(r.ngSrv.Addr().String())
	return a
}

// listenNG opens the ng control socket when ng.listen is set.
func (r *Relay) listenNG() error {
	if r.cfg.NG.Listen == "" {
		return nil
	}
	var allow []netip.Prefix
	for _, a := range r.cfg.NG.Allow {
		p, err := config.ParseSource(a)
		if err != nil {
			return fmt.Errorf("ng.allow %q: %w", a, err)
		}
		allow = append(allow, p)
	}
	cmds := r.m.NewCounterVec("mediarelay_ng_commands_total",
		"ng control commands served, by command and result (ok, pong, error).", "command", "result")
	srv, err := ng.Listen(r.cfg.NG.Listen, ngHandler{r}, ng.Options{Allow: allow, Logger: r.log.With("component", "ng"),
		OnCommand: func(command, result string) { cmds.WithLabelValues(command, result).Inc() }})
	if err != nil {
		return err
	}
	r.ngSrv = srv
	if a := r.NGAddr(); !a.Addr().IsLoopback() {
		r.log.Warn("ng.listen is not a loopback address: firewall it so that only the SIP proxies reach it",
			"ng_listen", a.String(), "ng_allow", strings.Join(r.cfg.NG.Allow, ","))
		if len(allow) == 0 {
			r.log.Warn("ng.allow is empty: only proxies on this host (loopback) are served")
		}
	}
	go r.serveLog("ng", srv.Serve)
	return nil
}

// stopNG closes the ng socket first at shutdown: no offer may create a
// call while the relay hangs up the others.
func (r *Relay) stopNG() {
	if r.ngSrv != nil {
		_ = r.ngSrv.Close()
	}
}

func (r *Relay) ngSession(callID string) *ngSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ngCalls[callID]
}

// isWebRTC says whether an SDP's audio is a browser's: DTLS over UDP (or TCP).
func isWebRTC(a sdp.Audio) bool {
	return strings.Contains(strings.ToUpper(a.Proto), "TLS")
}

// ngRoute is the stand-in trunk of an ng call: the media policy the
// flags ask for, named after the proxy so that the CDR says where the call
// came from.
func ngRoute(proxy netip.AddrPort, f ng.Flags, offerCodecs []sdp.Codec, plainSide string) *config.Trunk {
	t := &config.Trunk{
		Name:                           "ng:" + proxy.String(),
		Transport:                      "udp",
		MediaMode:                      mediaplan.ModePassthrough,
		AllowSDESOverInsecureTransport: true, // the proxy decided; SDES over its signalling is its call
	}
	// Codecs: what the offer has that the relay can carry, less strip and
	// mask; transcode-X adds X (and allows transcoding). A masked X that is
	// also transcode-X is rtpengine's way to force transcoding: the
	// offerer's own X is hidden, so X reaches it only through the
	// transcoder.
	for _, c := range offerCodecs {
		if c.Is("telephone-event") || ng.Has(f.Codec.Strip, c.Name) || ng.Has(f.Codec.Mask, c.Name) {
			continue
		}
		if _, ok := mediaplan.SIPCodecs[strings.ToLower(c.Name)]; ok && !mediaplan.HasCodec(t.Codecs, c.Name) {
			t.Codecs = append(t.Codecs, mediaplan.SIPCodecs[strings.ToLower(c.Name)].Name)
		}
	}
	for _, name := range f.Codec.Transcode {
		if c, ok := mediaplan.SIPCodecs[strings.ToLower(name)]; ok && !ng.Has(f.Codec.Strip, name) {
			if t.MediaMode != mediaplan.ModeTranscode {
				t.MediaMode = mediaplan.ModeAuto
			}
			if ng.Has(f.Codec.Mask, name) {
				t.MediaMode = mediaplan.ModeTranscode
			}
			if !mediaplan.HasCodec(t.Codecs, c.Name) {
				t.Codecs = append(t.Codecs, c.Name)
			}
		}
	}
	// The plain side's encryption: SDES for a SAVP protocol unless SDES=off.
	if strings.Contains(plainSide, "SAVP") && !ng.Has(f.SDES, "off") {
		t.SRTP = mediaplan.SRTPRequired
	} else {
		t.SRTP = mediaplan.SRTPOff
	}
	return t
}

// Offer creates the call and returns the SDP for the other side.
func (h ngHandler) Offer(req *ng.Request) (string, error) {
	r := h.r
	if s := r.ngSession(req.CallID); s != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.offerSDP == req.SDP && s.fromTag == req.FromTag {
			s.last = time.Now()
			return s.replySDP, nil // the proxy sent the same offer again (a new branch, a retry)
		}
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errNGReoffer)
	}
	if r.draining.Load() {
		return "", errNGDraining
	}
	_, offer, err := sdp.Parse([]byte(req.SDP))
	if err != nil {
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, err)
	}
	offerWeb := isWebRTC(offer)
	if req.Flags.WantsWebRTC(offerWeb) == offerWeb {
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errNGSameProto)
	}
	plainProto := req.Flags.TransportProtocol
	if !offerWeb {
		plainProto = strings.ToUpper(offer.Proto)
	}
	if plainProto == "" {
		plainProto = "RTP/AVP"
	}
	s := &ngSession{
		callID:   req.CallID,
		fromTag:  req.FromTag,
		proxy:    req.Source,
		created:  time.Now(),
		labels:   map[string]string{},
		webOffer: offerWeb,
		offerSDP: req.SDP,
		flags:    req.Flags,
	}
	s.last = s.created
	if req.Flags.Label != "" {
		s.labels[req.FromTag] = req.Flags.Label
	}
	route := ngRoute(req.Source, req.Flags, offer.Codecs, plainProto)
	c := r.newCall(route, DirectionNG)
	c.browser.SetCallID(req.CallID)
	c.trunk.SetCallID(req.CallID)
	c.from, c.start, c.ngs = req.FromTag, s.created, s
	// Ids come from SIP clients through the proxy: logged bounded.
	c.log = r.log.With("call", c.id, "ng_call_id", logsafe.Truncate(req.CallID, 64), "proxy", req.Source.String())
	s.c = c

	// Register first so that a concurrent offer for the same call-id
	// finds this one; the session's lock holds it until the SDP is ready.
	s.mu.Lock()
	defer s.mu.Unlock()
	r.mu.Lock()
	if _, dup := r.ngCalls[req.CallID]; dup {
		r.mu.Unlock()
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, errNGReoffer)
	}
	r.ngCalls[req.CallID] = s
	r.mu.Unlock()
	r.addCall(c)

	var failure error
	fail := func(code int, reason, cause string, _ ...sip.Header) {
		failure = fmt.Errorf("%d %s", code, reason)
		if code == 503 {
			failure = errNGNoPorts // openRTPLeg: the port range is exhausted
		}
		r.countSetupFailure(code)
		c.hangup(cause, code, reason)
	}
	var out string
	if offerWeb {
		out, err = s.offerToPlain(offer, req, fail)
	} else {
		out, err = s.offerToWeb(offer, req, fail)
	}
	if err == nil && failure != nil {
		err = failure
	}
	if err != nil {
		if failure == nil {
			r.countSetupFailure(488)
			c.hangup(setupCause(err), 488, "")
		}
		if errors.Is(err, errNGNoPorts) {
			return "", err // exactly rtpengine's words
		}
		return "", fmt.Errorf("ng offer %s: %w", req.CallID, err)
	}
	s.replySDP = out
	// An offer never answered (the proxy lost the call, or a flood of
	// offers) must not hold its ports: it ends as a ringing B2BUA call would.
	time.AfterFunc(ringTimeout, func() {
		s.mu.Lock()
		unanswered := s.answerSDP == ""
		s.mu.Unlock()
		if unanswered {
			c.hangup(cdr.CauseNoAnswer, 0, "")
		}
	})
	c.log.Info("ng offer", "from_tag", logsafe.Truncate(req.FromTag, 64), "webrtc_offerer", offerWeb, "plain", plainProto, "codecs", strings.Join(route.Codecs, ","))
	return out, nil
}

// offerToPlain: a browser's offer becomes a plain RTP (or SDES-SRTP) offer
// on the relay's RTP port, as the B2BUA offers a trunk.
func (s *ngSession) offerToPlain(offer sdp.Audio, req *ng.Request, fail func(int, string, string, ...sip.Header)) (string, error) {
	c := s.c
	offered, err := mediaplan.TrunkOffer(c.route.MediaMode, c.route.Codecs, offer)
	if err != nil {
		return "", err
	}
	c.browserOffer = req.SDP
	c.offered = offered
	if !c.openRTPLeg(fail) {
		return "", nil
	}
	o := sdp.Offer{
		SessionID: uint64(time.Now().UnixNano()),
		Version:   1,
		Addr:      c.r.mediaAddr(),
		Port:      int(c.trunk.RTP().LocalAddr().Port()),
		Codecs:    offered,
		Direction: offer.Direction,
	}
	if err := c.secureOffer(&o); err != nil {
		return "", err
	}
	if len(req.Flags.SDES) > 0 {
		keep := c.sec.offered[:0]
		o.Crypto = o.Crypto[:0]
		for _, cr := range c.sec.offered {
			if req.Flags.AllowsSDES(cr.Suite) {
				keep = append(keep, cr)
				o.Crypto = append(o.Crypto, cr.String())
			}
		}
		c.sec.offered = keep
		if len(keep) == 0 && c.sec.policy == mediaplan.SRTPRequired {
			return "", fmt.Errorf("SDES flags leave no crypto suite")
		}
	}
	if tp := req.Flags.TransportProtocol; tp != "" {
		// RTP/AVPF and RTP/SAVPF as asked; the keys decide the S.
		if strings.HasSuffix(tp, "F") && !strings.HasSuffix(o.Proto, "F") {
			o.Proto = strings.TrimSuffix(firstNonEmpty(o.Proto, "RTP/AVP"), "F") + "F"
		}
	}
	if ng.Has(req.Flags.RTCPMux, "offer") || ng.Has(req.Flags.RTCPMux, "require") {
		o.Extra = append(o.Extra, "rtcp-mux")
	}
	return string(o.Marshal()), nil
}

// offerToWeb: a plain offer becomes a WebRTC offer (ICE-lite candidate on
// the shared WebRTC port, DTLS fingerprint), as an inbound call rings a browser.
func (s *ngSession) offerToWeb(offer sdp.Audio, req *ng.Request, fail func(int, string, string, ...sip.Header)) (string, error) {
	c := s.c
	offer = s.sourceAddress(offer, req.Flags)
	if err := usableConnection(offer); err != nil {
		return "", err
	}
	keys, refuse := mediaplan.InboundSecurity(c.route, offer, false)
	if refuse != "" {
		return "", errors.New(refuse)
	}
	codecs := mediaplan.BrowserCodecs(c.route.MediaMode, c.route.Codecs, offer)
	if len(codecs) == 0 {
		return "", mediaplan.ErrNoCommonCodec
	}
	c.trunkOffer = offer
	s.keys = keys
	if !c.openRTPLeg(fail) || !c.startInboundSRTP(keys, fail) {
		return "", nil
	}
	web, out, err := c.r.webrtc.Offer(codecs)
	if err != nil {
		return "", err
	}
	c.setWeb(web)
	return out, nil
}

// sourceAddress applies SIP-source-address: the peer's media address is
// the one the proxy received the SIP message from, not the SDP's.
func (s *ngSession) sourceAddress(a sdp.Audio, f ng.Flags) sdp.Audio {
	if f.SIPSourceAddress && !f.TrustAddress && f.ReceivedFrom.IsValid() && a.Port != 0 {
		a.Addr = f.ReceivedFrom
	}
	return a
}

// Answer applies the answerer's SDP and returns the SDP for the offerer.
func (h ngHandler) Answer(req *ng.Request) (string, error) {
	r := h.r
	s := r.ngSession(req.CallID)
	if s == nil {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errNGUnknownCall)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	select {
	case <-c.ended:
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errNGUnknownCall)
	default:
	}
	if req.FromTag != s.fromTag {
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, errNGFromTag)
	}
	if s.answerSDP != "" && s.toTag == req.ToTag {
		// 183 then 200, or a retry: the media is set; follow an address change.
		if !s.webOffer {
			return s.answerSDP, nil
		}
		if _, ans, err := sdp.Parse([]byte(req.SDP)); err == nil {
			c.trunk.SetRemote(s.sourceAddress(ans, req.Flags))
		}
		return s.answerSDP, nil
	}
	if s.answerSDP != "" && !s.webOffer {
		return "", fmt.Errorf("ng answer %s: a second answerer (to-tag) is not supported", req.CallID)
	}
	var err error
	if s.webOffer {
		_, ans, perr := sdp.Parse([]byte(req.SDP))
		if perr != nil {
			return "", fmt.Errorf("ng answer %s: %w", req.CallID, perr)
		}
		if isWebRTC(ans) {
			return "", fmt.Errorf("ng answer %s: the answer must be plain RTP", req.CallID)
		}
		err = c.setupMedia(s.sourceAddress(ans, req.Flags))
	} else {
		err = c.startInboundMedia(req.SDP, s.keys)
	}
	if err != nil {
		if s.answerSDP == "" {
			r.countSetupFailure(488)
			go c.hangup(setupCause(err), 488, "")
		}
		return "", fmt.Errorf("ng answer %s: %w", req.CallID, err)
	}
	first := s.answerSDP == ""
	s.answerSDP = c.answerSDP
	s.toTag = req.ToTag
	s.last = time.Now()
	if req.Flags.Label != "" {
		s.labels[req.ToTag] = req.Flags.Label
	}
	if first {
		r.mu.Lock()
		c.to = req.ToTag
		r.mu.Unlock()
		c.answered = time.Now()
		c.watch()
		c.beginCDR()
		c.log.Info("ng call answered", "to_tag", logsafe.Truncate(req.ToTag, 64))
	}
	return s.answerSDP, nil
}

// Delete ends the call and returns its statistics.
func (h ngHandler) Delete(req *ng.Request) (map[string]any, error) {
	s := h.r.ngSession(req.CallID)
	if s == nil {
		return nil, fmt.Errorf("ng delete %s: %w", req.CallID, errNGUnknownCall)
	}
	s.mu.Lock()
	s.last = time.Now()
	answered := s.answerSDP != ""
	s.mu.Unlock()
	cause := cdr.CauseNormalBrowser
	if !answered {
		cause = cdr.CauseCancelled
	}
	s.c.hangup(cause, 0, "")
	return s.stats(), nil
}

// Query returns the call's statistics.
func (h ngHandler) Query(req *ng.Request) (map[string]any, error) {
	s := h.r.ngSession(req.CallID)
	if s == nil {
		return nil, fmt.Errorf("ng query %s: %w", req.CallID, errNGUnknownCall)
	}
	return s.stats(), nil
}

// List returns the call-ids of the ng calls.
func (h ngHandler) List(limit int) []string {
	h.r.mu.Lock()
	ids := make([]string, 0, len(h.r.ngCalls))
	for id := range h.r.ngCalls {
		ids = append(ids, id)
	}
	h.r.mu.Unlock()
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	return ids
}

// Statistics returns the node's figures from the same counters /metrics
// serves, brought up to date as a scrape would.
func (h ngHandler) Statistics() map[string]any {
	r := h.r
	r.mu.Lock()
	ngCalls := len(r.ngCalls)
	r.mu.Unlock()
	active := int64(r.m.Sum("mediarelay_calls_active"))
	ended := map[string]any{}
	var total uint64
	for _, cause := range append(metrics.EndCauses, cdr.CauseNormalTrunk) {
		n := uint64(r.m.Sum("mediarelay_calls_total", "cause", cause))
		ended[cause] = n
		total += n
	}
	leg := func(name string) map[string]any {
		count := func(metric, dir string) uint64 { return uint64(r.m.Sum(metric, "leg", name, "dir", dir)) }
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
			"uptime":          int64(time.Since(r.start).Seconds()),
			"managedsessions": total,
			"timeoutsessions": uint64(r.m.Sum("mediarelay_calls_total", "cause", cdr.CauseMediaTimeout)),
			"endcauses":       ended,
			"draining":        r.draining.Load(),
		},
		"legs": map[string]any{
			metrics.LegWebRTC: leg(metrics.LegWebRTC),
			metrics.LegSIP:    leg(metrics.LegSIP),
		},
	}
}

// stats is the call in rtpengine's query/delete shape: per tag (party) its
// media stream with what was received from it, and totals.
func (s *ngSession) stats() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	rtp := c.sipLeg()
	var web *media.WebRTCLeg
	if c.web != nil {
		web = c.webLeg()
	}
	var ws, rs media.LegStats
	if web != nil {
		ws = web.Stats()
	}
	if rtp != nil {
		rs = rtp.Stats()
	}
	webProto, plainProto := "UDP/TLS/RTP/SAVPF", "RTP/AVP"
	if c.sec.suite != "" {
		plainProto = "RTP/SAVP"
	}
	var localPort int
	if rtp != nil {
		localPort = int(rtp.LocalAddr().Port())
	}
	webLocal := 0
	if c.r.webrtc != nil {
		_, webLocal = splitHostPort(c.r.webrtc.LocalAddr().String())
	}
	party := func(tag, proto string, port int, st media.LegStats, other string) map[string]any {
		stream := map[string]any{
			"local port": port,
			"stats":      map[string]any{"packets": st.PacketsIn, "bytes": st.BytesIn, "errors": st.Dropped},
			"stats_out":  map[string]any{"packets": st.PacketsOut, "bytes": st.BytesOut, "errors": 0},
			"lost":       st.Lost,
			"jitter_ms":  int64(st.Jitter),
		}
		if !st.LastReceived.IsZero() {
			stream["last packet"] = st.LastReceived.Unix()
		}
		p := map[string]any{
			"tag":     tag,
			"created": s.created.Unix(),
			"medias": []any{map[string]any{
				"index": 1, "type": "audio", "protocol": proto, "streams": []any{stream},
			}},
		}
		if other != "" {
			p["in dialogue with"] = other
		}
		if l := s.labels[tag]; l != "" {
			p["label"] = l
		}
		return p
	}
	tags := map[string]any{}
	webTag, plainTag := s.fromTag, s.toTag
	if !s.webOffer {
		webTag, plainTag = s.toTag, s.fromTag
	}
	if webTag != "" { // the answerer's tag is known once it answered
		tags[webTag] = party(webTag, webProto, webLocal, ws, plainTag)
	}
	if plainTag != "" {
		tags[plainTag] = party(plainTag, plainProto, localPort, rs, webTag)
	}
	totals := map[string]any{
		"RTP":  map[string]any{"packets": ws.PacketsIn + rs.PacketsIn, "bytes": ws.BytesIn + rs.BytesIn, "errors": ws.Dropped + rs.Dropped},
		"RTCP": map[string]any{"packets": 0, "bytes": 0, "errors": 0},
	}
	return map[string]any{
		"created":     s.created.Unix(),
		"created_us":  s.created.UnixMicro() % 1e6,
		"last signal": s.last.Unix(),
		"tags":        tags,
		"totals":      totals,
	}
}
