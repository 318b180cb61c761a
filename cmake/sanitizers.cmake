# Sanitizer build: -DATTNRAG_SANITIZE="address;undefined" or "thread".
if(ATTNRAG_SANITIZE)
    string(REPLACE ";" "," _san "${ATTNRAG_SANITIZE}")
    add_compile_options(-fsanitize=${_san} -fno-omit-frame-pointer -g)
    add_link_options(-fsanitize=${_san})
endif()
