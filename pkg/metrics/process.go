package metrics

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat. It is 100
// on every Linux architecture Go supports; reading sysconf(_SC_CLK_TCK)
// would need cgo.
const clockTicks = 100

// RegisterProcess adds the standard process_* metrics, read from
// /proc/self at scrape time, and go_goroutines. Where /proc is missing
// (not Linux) the process_* families are written without samples.
func RegisterProcess(r *Registry) {
	r.registerOptional("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter",
		func() (float64, bool) {
			st, ok := readProcStat()
			return float64(st.utime+st.stime) / clockTicks, ok
		})
	r.registerOptional("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
		func() (float64, bool) {
			st, ok := readProcStat()
			return float64(st.rssPages * uint64(os.Getpagesize())), ok
		})
	r.registerOptional("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
		func() (float64, bool) {
			st, ok := readProcStat()
			return float64(st.vsize), ok
		})
	r.registerOptional("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge",
		func() (float64, bool) {
			st, ok := readProcStat()
			boot, ok2 := bootTime()
			return boot + float64(st.startTicks)/clockTicks, ok && ok2
		})
	r.registerOptional("process_open_fds", "Number of open file descriptors.", "gauge",
		func() (float64, bool) {
			entries, err := os.ReadDir("/proc/self/fd")
			// ReadDir itself holds one descriptor open while it reads.
			return float64(len(entries) - 1), err == nil
		})
	r.registerOptional("process_max_fds", "Maximum number of open file descriptors.", "gauge", maxFDs)
	r.NewGaugeFunc("go_goroutines", "Number of goroutines that currently exist.",
		func() float64 { return float64(runtime.NumGoroutine()) })
}

// procStat holds the fields of /proc/self/stat the metrics use.
type procStat struct {
	utime, stime, startTicks, vsize, rssPages uint64
}

func readProcStat() (procStat, bool) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, false
	}
	return parseProcStat(data)
}

// parseProcStat parses proc(5) /proc/PID/stat. The command name (field 2)
// is in parentheses and may itself hold spaces and ')', so fields are
// counted from the last ')'.
func parseProcStat(data []byte) (procStat, bool) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field N is f[N-3].
	const utime, stime, starttime, vsize, rss = 14, 15, 22, 23, 24
	if len(f) < rss-2 {
		return procStat{}, false
	}
	get := func(n int) uint64 {
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	return procStat{
		utime: get(utime), stime: get(stime), startTicks: get(starttime),
		vsize: get(vsize), rssPages: get(rss),
	}, true
}

// bootTime reads btime, the boot time in seconds since the epoch, which
// the start time in /proc/self/stat is relative to.
func bootTime() (float64, bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "btime "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// maxFDs reads the soft limit from /proc/self/limits.
func maxFDs() (float64, bool) {
	data, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			if f[0] == "unlimited" {
				return 0, false
			}
			v, err := strconv.ParseFloat(f[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}
