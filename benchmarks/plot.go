package benchmarks

import (
	"fmt"
	"html"
	"math"
	"strings"
)

type series struct {
	name   string
	color  string
	points [][2]float64 // x = concurrent calls, y
}

// SVG draws two panels for a ladder run: relay CPU-µs per call-second and
// one-way browser->trunk delay (p50, with p95 dashed) against concurrent calls,
// one line per relay. It is hand-written so the benchmark needs no plotting
// dependency.
func (r *Report) SVG() string {
	colors := map[string]string{"mediarelay": "#1f77b4", "mediarelay (ng)": "#1f77b4", "rtpengine": "#d62728"}
	var cpu, delay, delay95 []series
	for _, t := range r.Targets {
		c := colors[t.Target]
		if c == "" {
			c = "#2ca02c"
		}
		s1 := series{name: t.Target, color: c}
		s2 := series{name: t.Target + " p50", color: c}
		s3 := series{name: t.Target + " p95", color: c}
		for _, x := range t.Steps {
			if x.Unsupported != "" || x.Concurrent == 0 {
				continue
			}
			if x.Relay.Measured {
				s1.points = append(s1.points, [2]float64{float64(x.Concurrent), x.Relay.CPUMicrosPerCallS})
			}
			if x.Up.DelayMs.N > 0 {
				s2.points = append(s2.points, [2]float64{float64(x.Concurrent), x.Up.DelayMs.P50})
				s3.points = append(s3.points, [2]float64{float64(x.Concurrent), x.Up.DelayMs.P95})
			}
		}
		cpu = append(cpu, s1)
		delay = append(delay, s2)
		delay95 = append(delay95, s3)
	}
	const w, h = 960, 420
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" text-anchor="middle" font-size="14">%s</text>`+"\n", w/2, html.EscapeString("mediarelay bench: "+r.Scenario.Name))
	panel(&b, 60, 50, 380, 300, "relay CPU-µs per call-second", cpu, nil)
	panel(&b, 540, 50, 380, 300, "delay browser→trunk ms (p50 solid, p95 dashed)", delay, delay95)
	// Legend.
	x := 60
	for _, s := range cpu {
		fmt.Fprintf(&b, `<line x1="%d" y1="400" x2="%d" y2="400" stroke="%s" stroke-width="3"/><text x="%d" y="404">%s</text>`+"\n", x, x+24, s.color, x+30, html.EscapeString(s.name))
		x += 160
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func panel(b *strings.Builder, x0, y0, pw, ph int, title string, solid, dashed []series) {
	maxX, maxY := 1.0, 1e-9
	for _, ss := range [][]series{solid, dashed} {
		for _, s := range ss {
			for _, p := range s.points {
				maxX = math.Max(maxX, p[0])
				maxY = math.Max(maxY, p[1])
			}
		}
	}
	maxX = niceCeil(maxX)
	maxY = niceCeil(maxY * 1.1)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+pw/2, y0-8, html.EscapeString(title))
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", x0, y0, pw, ph)
	for i := 0; i <= 5; i++ {
		yv := maxY * float64(i) / 5
		y := float64(y0+ph) - float64(ph)*float64(i)/5
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			x0, y, x0+pw, y, x0-4, y+4, fmtTick(yv))
		xv := maxX * float64(i) / 5
		x := float64(x0) + float64(pw)*float64(i)/5
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, y0+ph+16, fmtTick(xv))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">concurrent calls</text>`+"\n", x0+pw/2, y0+ph+34)
	draw := func(ss []series, dash string) {
		for _, s := range ss {
			if len(s.points) == 0 {
				continue
			}
			var pts []string
			for _, p := range s.points {
				px := float64(x0) + p[0]/maxX*float64(pw)
				py := float64(y0+ph) - p[1]/maxY*float64(ph)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px, py, s.color)
			}
			fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		}
	}
	draw(solid, "")
	draw(dashed, ` stroke-dasharray="6,4"`)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func fmtTick(v float64) string {
	if v >= 100 || v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}
