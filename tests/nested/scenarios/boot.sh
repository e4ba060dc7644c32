# nested.boot: dom0 of one nested host runs Xen's toolstack.
. "$NESTED_LIB"
xl info >info.txt || nl_fail "xl info failed"
cat info.txt
ver=$(sed -n 's/^xen_version *: *//p' info.txt)
caps=$(sed -n 's/^virt_caps *: *//p' info.txt)
case $ver in 4.17.*) ;; *) nl_fail "xen_version is '$ver', not 4.17.x" ;; esac
case " $caps " in
*" hvm "*|*" pvh "*) ;;
*) nl_fail "virt_caps '$caps' lack hvm/pvh" ;;
esac
case " $caps " in *" hap "*) ;; *) echo "note: no hap in '$caps'" ;; esac
xl list >list.txt || nl_fail "xl list failed"
cat list.txt
grep -q '^Domain-0 *0 ' list.txt || nl_fail "Domain-0 not in xl list"
echo "ok: xen $ver, virt_caps $caps, Domain-0 listed"
