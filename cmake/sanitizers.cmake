# Sanitizer build: -DATTNRAG_SANITIZE="address;undefined" or "thread". UBSan findings abort, so
# a test that triggers one fails.
if(ATTNRAG_SANITIZE)
    string(REPLACE ";" "," _san "${ATTNRAG_SANITIZE}")
    add_compile_options(-fsanitize=${_san} -fno-omit-frame-pointer -g)
    add_link_options(-fsanitize=${_san})
    if("undefined" IN_LIST ATTNRAG_SANITIZE)
        add_compile_options(-fno-sanitize-recover=undefined)
    endif()
endif()
