//go:build !cgo

package sigrelay

const cgoEnabled = false
