// Package hygiene holds no code: its tests check rules of the code base
// itself, such as which packages may import what.
package hygiene
