package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPrintEntries(t *testing.T) {
	local := time.Local
	time.Local = time.UTC // the expected times are UTC
	defer func() { time.Local = local }()
	in := strings.Join([]string{
		`{"__REALTIME_TIMESTAMP":"1795262400000000","MESSAGE":"hello","BATON_WORKER":"1","BATON_GENERATION":"7","BATON_WORKER_PID":"4242","SYSLOG_IDENTIFIER":"myapp"}`,
		`{"__REALTIME_TIMESTAMP":"1795262401000000","MESSAGE":"rollout aborted gen=8","BATON_EVENT":"rollout aborted","SYSLOG_IDENTIFIER":"baton","_PID":"10"}`,
		`{"__REALTIME_TIMESTAMP":"1795262402000000","MESSAGE":[104,105,10,116,104,101,114,101],"BATON_WORKER":"0","BATON_GENERATION":"7","BATON_WORKER_PID":"4241"}`,
		`not json`,
	}, "\n")
	var out bytes.Buffer
	printEntries(&out, strings.NewReader(in), false)
	want := "" +
		"2026-11-21 12:00:00.000  w1    g7   4242    hello\n" +
		"2026-11-21 12:00:01.000  baton g-   10      >> rollout aborted gen=8\n" +
		"2026-11-21 12:00:02.000  w0    g7   4241    hi\n" +
		"                                            there\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
