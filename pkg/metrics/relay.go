package metrics

// Label values of mediarelay_packets_total and mediarelay_bytes_total.
const (
	LegWebRTC = "webrtc"
	LegSIP    = "sip"
	DirIn     = "in"
	DirOut    = "out"
)

// Reasons for mediarelay_packets_dropped_total.
const (
	DropUnlatchedSource = "unlatched_source" // from an address the leg is not latched to
	DropMalformed       = "malformed"        // not parseable RTP/RTCP
	DropSRTPAuth        = "srtp_auth"        // SRTP/SRTCP authentication failed
	DropSRTPReplay      = "srtp_replay"      // SRTP replay protection refused it
	DropLate            = "late"             // arrived too late for the jitter buffer or transcoder
	DropNoRoute         = "no_route"         // no call owns the port or SSRC
	DropQueueFull       = "queue_full"       // the outbound queue or socket buffer was full
)

// Relay holds the relay's own metrics. The vectors can be used directly
// with With; the *Counter fields are children resolved at start, for the
// packet path, which must only do atomic adds.
type Relay struct {
	// CallsActive is mediarelay_calls_active: calls between INVITE and BYE.
	CallsActive *Gauge
	// CallsTotal is mediarelay_calls_total{cause}: ended calls by CDR end cause.
	CallsTotal *CounterVec
	// CallSetupFailures is mediarelay_call_setup_failures_total{code}: calls
	// that failed before answer, by the SIP status code sent to the caller.
	CallSetupFailures *CounterVec
	// Packets is mediarelay_packets_total{leg,dir}.
	Packets *CounterVec
	// Bytes is mediarelay_bytes_total{leg,dir}: RTP/RTCP payload bytes as
	// received or sent on the socket.
	Bytes *CounterVec
	// PacketsDropped is mediarelay_packets_dropped_total{reason}.
	PacketsDropped *CounterVec
	// SIPRequests is mediarelay_sip_requests_total{method}: requests received.
	SIPRequests *CounterVec
	// TranscodedCalls is mediarelay_transcoded_calls_total{mode}: answered
	// calls by media mode ("passthrough" or "transcode", as in the CDR).
	TranscodedCalls *CounterVec

	// WebRTC and SIP are the packet and byte counters of each leg.
	WebRTC, SIP LegCounters
	// Drops are the drop counters by reason.
	Drops DropCounters
}

// LegCounters are one leg's packet and byte counters, resolved once.
type LegCounters struct {
	PacketsIn, PacketsOut, BytesIn, BytesOut *Counter
}

// DropCounters are the children of mediarelay_packets_dropped_total for
// the known reasons.
type DropCounters struct {
	UnlatchedSource, Malformed, SRTPAuth, SRTPReplay, Late, NoRoute, QueueFull *Counter
}

// EndCauses are the CDR end causes; mediarelay_calls_total starts at zero
// for each so that rate() works from the first scrape.
var EndCauses = []string{
	"normal", "busy", "no_answer", "cancelled", "media_timeout",
	"ice_failed", "trunk_unreachable", "rejected", "error",
}

// NewRelay registers the relay's metrics, and the process metrics (see
// RegisterProcess), in reg. Call it once per registry.
func NewRelay(reg *Registry) *Relay {
	m := &Relay{
		CallsActive:       reg.NewGauge("mediarelay_calls_active", "Calls in progress."),
		CallsTotal:        reg.NewCounterVec("mediarelay_calls_total", "Calls ended, by end cause.", "cause"),
		CallSetupFailures: reg.NewCounterVec("mediarelay_call_setup_failures_total", "Calls that failed before answer, by SIP status code.", "code"),
		Packets:           reg.NewCounterVec("mediarelay_packets_total", "RTP and RTCP packets forwarded, by leg and direction.", "leg", "dir"),
		Bytes:             reg.NewCounterVec("mediarelay_bytes_total", "RTP and RTCP bytes forwarded, by leg and direction.", "leg", "dir"),
		PacketsDropped:    reg.NewCounterVec("mediarelay_packets_dropped_total", "Media packets dropped, by reason.", "reason"),
		SIPRequests:       reg.NewCounterVec("mediarelay_sip_requests_total", "SIP requests received, by method.", "method"),
		TranscodedCalls:   reg.NewCounterVec("mediarelay_transcoded_calls_total", "Answered calls by media mode.", "mode"),
	}
	leg := func(name string) LegCounters {
		return LegCounters{
			PacketsIn:  m.Packets.With(name, DirIn),
			PacketsOut: m.Packets.With(name, DirOut),
			BytesIn:    m.Bytes.With(name, DirIn),
			BytesOut:   m.Bytes.With(name, DirOut),
		}
	}
	m.WebRTC, m.SIP = leg(LegWebRTC), leg(LegSIP)
	d := m.PacketsDropped.With
	m.Drops = DropCounters{
		UnlatchedSource: d(DropUnlatchedSource), Malformed: d(DropMalformed), SRTPAuth: d(DropSRTPAuth),
		SRTPReplay: d(DropSRTPReplay), Late: d(DropLate), NoRoute: d(DropNoRoute), QueueFull: d(DropQueueFull),
	}
	for _, cause := range EndCauses {
		m.CallsTotal.With(cause)
	}
	m.TranscodedCalls.With("passthrough")
	m.TranscodedCalls.With("transcode")
	RegisterProcess(reg)
	return m
}

// Leg returns the counters of the named leg (LegWebRTC or LegSIP).
func (m *Relay) Leg(name string) LegCounters {
	if name == LegSIP {
		return m.SIP
	}
	if name == LegWebRTC {
		return m.WebRTC
	}
	return LegCounters{
		PacketsIn: m.Packets.With(name, DirIn), PacketsOut: m.Packets.With(name, DirOut),
		BytesIn: m.Bytes.With(name, DirIn), BytesOut: m.Bytes.With(name, DirOut),
	}
}
