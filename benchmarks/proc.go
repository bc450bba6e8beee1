package benchmarks

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. The
// kernel fixes it at 100 for the /proc ABI on every architecture Linux
// supports today, whatever CONFIG_HZ is, so no sysconf (and no cgo) is needed.
const clockTicks = 100

// CPUSample is a process's cumulative CPU time at one instant.
type CPUSample struct {
	UserTicks uint64
	SysTicks  uint64
	When      time.Time
}

// ParseProcStat extracts utime and stime (fields 14 and 15) from the contents
// of /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last ')'.
func ParseProcStat(data []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("proc stat: no ')' in %q", truncate(data, 64))
	}
	f := strings.Fields(string(data[i+1:]))
	// After ')' come field 3 (state) onward: utime is field 14 -> index 11.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after comm, want >= 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("proc stat utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("proc stat stime: %w", err)
	}
	return utime, stime, nil
}

// ReadCPU samples /proc/PID/stat; pid 0 means this process.
func ReadCPU(pid int) (CPUSample, error) {
	data, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return CPUSample{}, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	u, s, err := ParseProcStat(data)
	if err != nil {
		return CPUSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return CPUSample{UserTicks: u, SysTicks: s, When: time.Now()}, nil
}

// ReadThreadCPU samples /proc/self/task/TID/stat: one thread of this
// process, such as a load client engine thread locked to its goroutine.
func ReadThreadCPU(tid int) (CPUSample, error) {
	data, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return CPUSample{}, fmt.Errorf("read cpu of thread %d: %w", tid, err)
	}
	u, s, err := ParseProcStat(data)
	if err != nil {
		return CPUSample{}, fmt.Errorf("thread %d: %w", tid, err)
	}
	return CPUSample{UserTicks: u, SysTicks: s, When: time.Now()}, nil
}

// CPUWindow is the CPU a process used between two samples.
type CPUWindow struct {
	UserMicros float64
	SysMicros  float64
	Wall       time.Duration
}

// CPUBetween returns the CPU used from a to b.
func CPUBetween(a, b CPUSample) CPUWindow {
	const usPerTick = 1e6 / clockTicks
	return CPUWindow{
		UserMicros: float64(b.UserTicks-a.UserTicks) * usPerTick,
		SysMicros:  float64(b.SysTicks-a.SysTicks) * usPerTick,
		Wall:       b.When.Sub(a.When),
	}
}

// TotalMicros is user+sys CPU in microseconds.
func (w CPUWindow) TotalMicros() float64 { return w.UserMicros + w.SysMicros }

// Cores is the average number of cores busy over the window.
func (w CPUWindow) Cores() float64 {
	if w.Wall <= 0 {
		return 0
	}
	return w.TotalMicros() / float64(w.Wall.Microseconds())
}

// PerCallSecond is CPU-µs spent per call-second when calls calls were up for
// the whole window: the relay's cost of carrying one call for one second.
func (w CPUWindow) PerCallSecond(calls int) float64 {
	if calls <= 0 || w.Wall <= 0 {
		return 0
	}
	return w.TotalMicros() / (float64(calls) * w.Wall.Seconds())
}

// CallsPerCore turns CPU-µs per call-second into the number of calls one
// fully busy core could carry (1 core = 1e6 CPU-µs per second).
func CallsPerCore(usPerCallSecond float64) float64 {
	if usPerCallSecond <= 0 {
		return 0
	}
	return 1e6 / usPerCallSecond
}

// ParseRSS extracts VmRSS in bytes from the contents of /proc/PID/status.
func ParseRSS(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		f := strings.Fields(line[len("VmRSS:"):])
		if len(f) < 1 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %w", line, err)
		}
		if len(f) > 1 && f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS unit %q, want kB", f[1])
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line in status")
}

// ReadRSS returns the resident set size of pid (0: this process) in bytes.
func ReadRSS(pid int) (int64, error) {
	data, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	return ParseRSS(data)
}

// MemPerCall is the RSS growth from idle to loaded, divided by the calls up.
func MemPerCall(idle, loaded int64, calls int) float64 {
	if calls <= 0 {
		return 0
	}
	return float64(loaded-idle) / float64(calls)
}

func procPath(pid int, name string) string {
	if pid == 0 {
		return "/proc/self/" + name
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// ParseUDPDrops sums the drops column of /proc/net/udp (or udp6) contents
// over the sockets whose inode is in inodes. A drop there is a datagram the
// kernel discarded because the socket's receive buffer was full: loss that
// happened inside the receiving process's host, not on the path.
func ParseUDPDrops(data []byte, inodes map[string]bool) (int64, error) {
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			continue
		}
		if !inodes[f[9]] {
			continue
		}
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("udp drops %q: %w", f[len(f)-1], err)
		}
		total += n
	}
	return total, sc.Err()
}

// socketInodes lists the socket inodes open in pid (0: this process).
func socketInodes(pid int) (map[string]bool, error) {
	dir := "/proc/self/fd"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/fd"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if strings.HasPrefix(l, "socket:[") && strings.HasSuffix(l, "]") {
			inodes[l[len("socket:["):len(l)-1]] = true
		}
	}
	return inodes, nil
}

// ReadUDPDrops returns the receive-buffer drops so far on pid's UDP sockets.
func ReadUDPDrops(pid int) (int64, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := ParseUDPDrops(data, inodes)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
