package tone

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// WriteWAV writes pcm as a 16-bit mono PCM WAV file at rate Hz.
func WriteWAV(w io.Writer, pcm []int16, rate int) error {
	if rate <= 0 {
		return fmt.Errorf("wav: bad sample rate %d", rate)
	}
	dataLen := 2 * len(pcm)
	if dataLen > 1<<31 {
		return errors.New("wav: too many samples for a WAV file")
	}
	var h [44]byte
	copy(h[0:4], "RIFF")
	binary.LittleEndian.PutUint32(h[4:8], uint32(36+dataLen))
	copy(h[8:12], "WAVE")
	copy(h[12:16], "fmt ")
	binary.LittleEndian.PutUint32(h[16:20], 16)
	binary.LittleEndian.PutUint16(h[20:22], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:24], 1) // mono
	binary.LittleEndian.PutUint32(h[24:28], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:32], uint32(rate*2)) // byte rate
	binary.LittleEndian.PutUint16(h[32:34], 2)              // block align
	binary.LittleEndian.PutUint16(h[34:36], 16)             // bits per sample
	copy(h[36:40], "data")
	binary.LittleEndian.PutUint32(h[40:44], uint32(dataLen))
	if _, err := w.Write(h[:]); err != nil {
		return fmt.Errorf("wav header: %w", err)
	}
	buf := make([]byte, dataLen)
	for i, s := range pcm {
		binary.LittleEndian.PutUint16(buf[2*i:], uint16(s))
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("wav data: %w", err)
	}
	return nil
}

// ReadWAV reads a 16-bit PCM WAV file and returns its samples and rate. It
// accepts mono only and skips chunks it does not need (LIST, fact, …).
func ReadWAV(r io.Reader) (pcm []int16, rate int, err error) {
	var riff [12]byte
	if _, err := io.ReadFull(r, riff[:]); err != nil {
		return nil, 0, fmt.Errorf("wav: reading RIFF header: %w", err)
	}
	if string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return nil, 0, errors.New("wav: not a RIFF/WAVE file")
	}
	haveFmt := false
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return nil, 0, fmt.Errorf("wav: reading chunk header: %w", err)
		}
		id := string(ch[0:4])
		size := int64(binary.LittleEndian.Uint32(ch[4:8]))
		switch id {
		case "fmt ":
			if size < 16 || size > 1<<16 {
				return nil, 0, fmt.Errorf("wav: fmt chunk of %d bytes", size)
			}
			f := make([]byte, size+size&1)
			if _, err := io.ReadFull(r, f); err != nil {
				return nil, 0, fmt.Errorf("wav: reading fmt chunk: %w", err)
			}
			format := binary.LittleEndian.Uint16(f[0:2])
			channels := binary.LittleEndian.Uint16(f[2:4])
			rate = int(binary.LittleEndian.Uint32(f[4:8]))
			bits := binary.LittleEndian.Uint16(f[14:16])
			// 0xFFFE is WAVE_FORMAT_EXTENSIBLE, which tools also use for plain PCM.
			if (format != 1 && format != 0xFFFE) || channels != 1 || bits != 16 {
				return nil, 0, fmt.Errorf("wav: want 16-bit mono PCM, got format %d, %d channels, %d bits", format, channels, bits)
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, 0, errors.New("wav: data chunk before fmt chunk")
			}
			data, err := io.ReadAll(io.LimitReader(r, size))
			if err != nil {
				return nil, 0, fmt.Errorf("wav: reading data: %w", err)
			}
			pcm = make([]int16, len(data)/2)
			for i := range pcm {
				pcm[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
			}
			return pcm, rate, nil
		default:
			if _, err := io.CopyN(io.Discard, r, size+size&1); err != nil {
				return nil, 0, fmt.Errorf("wav: skipping %q chunk: %w", id, err)
			}
		}
	}
}
