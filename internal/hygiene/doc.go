// Package hygiene holds no code: its tests check rules of the code base
// itself, such as which packages may import what, and that every relative
// link in the Markdown pages leads to a file and heading that exist.
package hygiene
