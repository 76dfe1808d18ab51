# bash completion for baton: asks baton itself (urfave/cli's
# --generate-bash-completion) for the commands and flags that fit.
_baton() {
  local cur words cword
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local request=("${words[@]:0:$cword}")
  [[ "$cur" == -* ]] && request+=("$cur")
  local opts
  opts=$("${request[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _baton baton
