package cdr

// End causes (Record.EndCause, and the calls_total metric's cause label).
// A call or a join ends with one of these; the store itself gives
// CauseInProgress and CauseRelayRestart.
const (
	CauseNormalBrowser  = "normal"            // the browser hung up
	CauseNormalTrunk    = "normal_trunk"      // the trunk hung up
	CauseBusy           = "busy"              // 486/600
	CauseNoAnswer       = "no_answer"         // ring timeout or 408/480
	CauseCancelled      = "cancelled"         // the browser cancelled while ringing
	CauseRejected       = "rejected"          // any other final failure from the trunk
	CauseUnreachable    = "trunk_unreachable" // the trunk could not be reached or did not respond
	CauseMediaTimeout   = "media_timeout"     // no media on a leg for media.timeout
	CauseICEFailed      = "ice_failed"        // the WebRTC leg failed (ICE, DTLS, consent)
	CauseNoCodec        = "no_common_codec"   // nothing the legs share or the relay converts
	CauseBadRequest     = "bad_request"       // a malformed request or SDP
	CauseNoRoute        = "no_route"          // no trunk for the called number
	CauseError          = "error"             // the relay could not go on (no media port, an answer not delivered)
	CauseShutdown       = "shutdown"          // the relay stopped
	CauseSessionExpired = "session_expired"   // a trunk leg's session timer ran out (RFC 4028)
	CauseAdminHangup    = "admin_hangup"      // an operator hung up through DELETE /api/calls/{id}
	CauseE2ENoDTLS      = "e2e_no_dtls"       // an end-to-end call whose far end has no DTLS-SRTP
	CauseSRTPAuth       = "srtp_auth_failed"  // the trunk's SRTP stopped authenticating
	CauseSRTPRequired   = "srtp_required"     // the trunk would not encrypt, or not acceptably
	CauseDTLSFailed     = "dtls_failed"       // the SIP leg's DTLS handshake or fingerprint check failed
	CauseTransferred    = "transferred"       // a browser's call whose trunk leg went on in a join
)

// End causes the store itself gives.
const (
	// CauseInProgress marks the row Begin writes when a call is answered;
	// Write completes it when the call ends.
	CauseInProgress = "in_progress"
	// CauseRelayRestart closes, at the next start, rows a relay left in
	// progress (it was killed); their end time is the last one known.
	CauseRelayRestart = "relay_restart"
)

// Who ended a call or a join, as Record.EndedBy says; an operator who hung
// up through the call API is "admin@ADDRESS" instead.
const (
	EndedByBrowser = "browser"
	EndedByTrunk   = "trunk"
	EndedByRelay   = "relay"
)

// WhoEnded is the side an end cause points at: the browser (it hung up or
// cancelled), a trunk (it hung up, was busy or rejected), or else the
// relay (a timer, an error, shutdown, a transfer).
func WhoEnded(cause string) string {
	switch cause {
	case CauseNormalBrowser, CauseCancelled:
		return EndedByBrowser
	case CauseNormalTrunk, CauseBusy, CauseRejected:
		return EndedByTrunk
	}
	return EndedByRelay
}
