package metrics

import (
	"bytes"
	"math"
	"strconv"
	"strings"
)

// exposition writes the Prometheus text format, version 0.0.4: for each
// family a # HELP and a # TYPE line, then its samples, one per line, as
// name{label="value",...} value. That is the whole format baton needs: the
// client library would cost baton 3.5 MB of resident memory and 6.7 MB of
// binary just by being linked (measured: docs/operating.md, Metrics), for
// four kinds of line. The tests parse what this writes with Prometheus's own
// parser.
type exposition struct {
	b bytes.Buffer
}

// Metric types.
const (
	gauge     = "gauge"
	counter   = "counter"
	histogram = "histogram"
)

// family starts a metric family.
func (e *exposition) family(name, typ, help string) {
	e.b.WriteString("# HELP " + name + " " + helpEscaper.Replace(help) + "\n")
	e.b.WriteString("# TYPE " + name + " " + typ + "\n")
}

// sample writes one sample; labels are name, value pairs.
func (e *exposition) sample(name string, v float64, labels ...string) {
	e.b.WriteString(name)
	if len(labels) > 0 {
		e.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				e.b.WriteByte(',')
			}
			// Label values are UTF-8: a path or a socket name that is
			// not gets U+FFFD for its bad bytes.
			v := strings.ToValidUTF8(labels[i+1], "\uFFFD")
			e.b.WriteString(labels[i] + `="` + labelEscaper.Replace(v) + `"`)
		}
		e.b.WriteByte('}')
	}
	e.b.WriteString(" " + formatValue(v) + "\n")
}

// one writes a family of a single sample.
func (e *exposition) one(name, typ, help string, v float64, labels ...string) {
	e.family(name, typ, help)
	e.sample(name, v, labels...)
}

var (
	// In HELP text a backslash and a line feed are escaped; in a label
	// value the double quote too.
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
