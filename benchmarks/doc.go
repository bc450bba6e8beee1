// Package benchmarks is mediarelay's load generator: it places real calls
// through a relay from a browser-like client (SIP over WebSocket, ICE over
// UDP or TCP, DTLS-SRTP) and answers them with a built-in trunk UAS (plain
// RTP, SDES-SRTP, or DTLS-SRTP end to end with the client), then measures
// setup time, loss, jitter, added delay, and the relay's CPU and memory per
// call. The `mediarelay bench` command calls Main.
package benchmarks
