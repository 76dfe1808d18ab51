//go:build cgo

package sigrelay

const cgoEnabled = true
