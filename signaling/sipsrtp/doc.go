// Package sipsrtp owns the encryption of a SIP leg's RTP: negotiating it
// with the peer per the trunk's srtp policy (SDES keys offered and picked
// from the answer, keys taken from a trunk's offer, or a DTLS-SRTP
// handshake on the leg's port), and, once it is keyed, watching that the
// peer's stream keeps authenticating.
//
// A Negotiation is one leg's set-up, from the offer to the answer; it
// needs the leg's trunk and RTP leg and nothing of the call the leg is
// for. A State is what a call keeps of its current trunk leg's
// negotiation, across transfers that replace the leg, with the count of
// packets that failed authentication.
package sipsrtp
