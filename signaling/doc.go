// Package signaling is the relay's SIP side: SIP over WebSocket for
// browsers, UDP, TCP and TLS for trunks, and the B2BUA that turns one
// INVITE into two independent dialogs with the media relayed between them.
//
// A Relay owns the listeners, the registrar (signaling/registrar), the
// calls (signaling/callreg) and the joins (signaling/join). Every SIP
// request enters its router (routeRequests): a new INVITE from a browser
// becomes an outbound call to a trunk, one from a trunk rings the browsers
// registered as the called user (signaling/fork); a request inside a
// dialog goes to the Call (found by dialog in the calls registry) or join
// it belongs to, or gets 481 there. Which trunk a browser's call
// goes to is config.Routes, compiled once in pkg/config (patterns,
// addresses, sources, the default trunk by name or by URI); signaling
// routes by that table and defaults nothing itself.
//
// A Call is one browser↔trunk call: two SIP legs (signaling/sipleg) and,
// between the browser's WebRTC leg and the trunk's RTP leg, its media
// (signaling/callmedia): one media.Path per direction running the plan's
// stage, forwarding, G.711 law conversion, or an Opus transcode bridge
// (the plan itself is signaling/mediaplan's decision). A sipleg.Leg is a dialog and what
// concerns it alone: the relay's SDP on it and its next version, the
// direction the peer asked for, offer/answer state (glare, an answer due
// in the ACK), the RFC 4028 session timer, and what is sent on that dialog
// (re-INVITEs, refreshes, DTMF INFO, a REFER's NOTIFYs); the trunk's also
// holds the RTP leg, whose encryption a sipsrtp.Negotiation sets up and
// the call's sipsrtp.State keeps. The Call decides what crosses between
// its legs:
// mid-call offers, hold (either leg's direction), transfers, DTMF, and at
// the end the CDR (recordPlan, recordLegs, shared with joins). A transfer
// that leaves two trunk legs talking hands its trunk leg to a join
// (signaling/join), which relays two trunk legs to each other; what only
// the relay can do for a join (its Contact, dialling a transfer target,
// metrics and the CDR) the join asks of its join.Host, joinHost here.
//
// Browsers authenticate by digest or time-limited tokens before a trunk is
// dialled (signaling/callauth decides); trunks are known by source address or digest. SIP proxies can
// also drive the relay as a media node over rtpengine's ng protocol
// (signaling/ngnode): each session's media is a Call, set up in ngcall.go
// through ngnode.Call.
//
// Sub-packages own one concern each and know nothing of Relay or Call:
//   - sipleg: one SIP dialog of a call or join and what is sent on it
//     alone (SDP versions, offer/answer and glare, session timer, INFO,
//     NOTIFY), what a REFER asks for (Refer-To, Replaces), and the hold
//     state of a pair of legs;
//   - join: two trunk legs relayed to each other after a transfer (media,
//     hold, codec changes, INFO, further REFERs), and the joins in
//     progress, filed by dialog for the router;
//   - callmedia: the media of a call between its legs: the stages of
//     both directions, following a trunk's codec change, moving to a
//     transfer's new leg, DTMF between the legs, and what the legs moved;
//   - callmetrics: what the relay counts of requests, calls and legs;
//   - callreg: the calls in progress, by id, by either leg's dialog and by
//     WebSocket peer, and the lock that also guards a call's replaceable
//     legs;
//   - callauth: who may call whom: a browser's credentials or
//     registration, per-user call rates and slots, transfers to trunks,
//     and which user a called name rings;
//   - mediaplan: what a call's media will be, from the two legs' SDPs:
//     the codecs offered each side, the plan an answer settles and how it
//     follows a mid-call offer, end-to-end DTLS identities, and the SIP
//     leg's SRTP policy and SDES keys;
//   - sipsrtp: the encryption of a SIP leg's RTP: its negotiation per
//     the trunk's srtp policy (SDES, keys from a trunk's offer, DTLS-SRTP
//     on the leg's port), which needs no Call, and a call's watch on a
//     keyed stream that keeps failing authentication;
//   - dtmf: RFC 4733 telephone-events played into a media path and
//     turned into SIP INFO, and reading an INFO's digit;
//   - callapi: the HTTP call API (list, show, hang up), who may use it,
//     and its JSON views of calls;
//   - registrar: browsers' registrations, and the digest challenge of
//     their REGISTERs and calls;
//   - digest: digest authentication (user table, nonces, checking an
//     Authorization);
//   - throttle: per-source request rates and per-user call limits, and
//     what a request's source is (SourceIP, also the registrar's and the
//     router's);
//   - trunkreg: the relay's own registrations at trunks;
//   - fork: ringing every registered browser of a user at once, the
//     first answer winning;
//   - ng: rtpengine's ng control protocol;
//   - ngnode: the relay as an ng media node: the proxies' sessions, what
//     each command does to one, the node's statistics, and its control
//     socket;
//   - drain: the draining switch, /healthz and /admin/drain;
//   - web: the demo softphone;
//   - echo: the built-in sip:echo endpoint;
//   - connguard: reaping idle SIP streams and WebSockets;
//   - wsdemux: sharing the HTTP port with SIP over WebSocket;
//   - tlsconf: the secure transports' TLS configurations;
//   - logsafe: what logs may carry.
package signaling
