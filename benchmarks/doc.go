// Package benchmarks is mediarelay's load generator: it places real calls
// through a relay from a browser-like client (SIP over WebSocket, ICE,
// DTLS-SRTP) and answers them with a built-in trunk UAS, then measures setup
// time, loss, jitter, added delay, and the relay's CPU and memory per call.
// The `mediarelay bench` command calls Main.
package benchmarks
