// Package transcode converts audio between the WebRTC leg (Opus, 48 kHz RTP
// clock) and the SIP leg (G.711 μ-law/A-law or G.722, 8 kHz RTP clock) of a
// call.
//
// It holds the codecs written here (G.711 tables, G.722 sub-band ADPCM), the
// RTP and RFC 4733 telephone-event parsing the relay needs on its hot path,
// and Bridge, which runs one transcoded call in both directions with
// preallocated buffers so that no packet causes an allocation.
package transcode
